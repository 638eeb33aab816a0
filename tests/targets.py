"""Where the HTTP suite sends its requests: the stack on this host, or the image under Docker.

A Target has `base_url`, `logs() -> str` and `stop()`. `HostTarget` runs `python entrypoint.py
serve` with a model dir on a free 127.0.0.1 port; the container target lives in
tests/container/target.py (`start_container_target(image, model_dir, env) -> Target`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

import requests

# One free-port and readiness-poll implementation for the tests and the benchmark (the repository
# root is on pytest's pythonpath). free_port and ServerDied are imported from here too.
from bench.loopback import NotReady, ServerDied, free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODELS = ROOT / "tests" / "fixtures" / "models"
TINY_MODEL = FIXTURE_MODELS / "distilbert-tiny-s0"
READY_TIMEOUT_S = 180.0
# Configuration of the environment the tests run in must not leak into the stack under test.
_CONFIG_PREFIXES = ("SAGEMAKER_", "QA_", "HF_")


class Target(Protocol):
    base_url: str

    def logs(self) -> str: ...

    def stop(self) -> None: ...


def _ping_ok(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/ping", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_ready(target: Target, deadline_s: float, is_alive=lambda: True) -> float:
    """Poll /ping until 200; returns seconds waited. Fails at once if the server died."""
    try:
        return wait_until_ready(lambda: _ping_ok(target.base_url), deadline_s, is_alive)
    except ServerDied:
        raise ServerDied(f"the server exited before it was ready; its logs:\n{target.logs()}") from None
    except NotReady:
        raise TimeoutError(
            f"/ping not 200 within {deadline_s:.0f} s; the server's logs:\n{target.logs()}"
        ) from None


class HostTarget:
    """`python entrypoint.py serve` on this host (needs /usr/sbin/nginx), in its own process group."""

    def __init__(
        self,
        model_dir: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
        argv: tuple[str, ...] = ("serve",),
    ):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.run_dir = workdir / "run"
        self.log_path = workdir / "stack.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_PREFIXES)}
        self.env.update(
            {
                "QA_MODEL_DIR": str(model_dir),
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "QA_BIND_HOST": "127.0.0.1",
                "QA_RUN_DIR": str(self.run_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(env or {})
        self.argv = [sys.executable, str(ROOT / "entrypoint.py"), *argv]
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after_s: float | None = None

    def start(self) -> HostTarget:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # O_APPEND: nginx, gunicorn and Python all write to this file; none may overwrite another.
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        return self

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, deadline_s: float = READY_TIMEOUT_S) -> float:
        """Seconds from start to the first 200 on /ping."""
        wait_ready(self, deadline_s, self.is_alive)
        self.ready_after_s = time.monotonic() - self.started_at
        return self.ready_after_s

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 40.0) -> int | None:
        """SIGTERM the entrypoint, wait, then SIGKILL whatever is left of its process group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        return self.proc.returncode


def started_and_ready(target):
    """Start a Target and wait for its first 200 on /ping; stop it again if that fails."""
    target.start()
    try:
        target.wait_ready()
    except BaseException:
        target.stop()
        raise
    return target


def start_host_target(model_dir: Path, workdir: Path, env: dict[str, str] | None = None) -> HostTarget:
    return started_and_ready(HostTarget(model_dir, workdir, env))
