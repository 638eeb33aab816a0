"""The built image under Docker, as a target for the HTTP suite and the container tests.

`start_container_target(image, model_dir, env)` runs

    docker run --rm --name qa-test-<random> --network host \
        -v MODEL_DIR:/opt/ml/model:ro -e SAGEMAKER_BIND_TO_PORT=<free port> -e QA_BIND_HOST=127.0.0.1 IMAGE serve

and returns once /ping answers 200 (`ready_after_s` says how long that took from `docker run`).
With `network="none"` the container keeps SageMaker's defaults (0.0.0.0:8080) inside its own
network namespace, and requests are made from inside it (`http_in_container`): loopback only,
whatever uses port 8080 on this host.
The docker client stays attached, writing the container's output to a log file, so the logs
outlive the container (`--rm` removes it when it exits) and a container that dies at start-up
fails the wait at once with its logs. `stop()` is `docker stop` (SIGTERM, SIGKILL after 30 s)
and returns the container's exit code; every container started here is removed at exit too.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import requests
from targets import READY_TIMEOUT_S, ServerDied, free_port, started_and_ready, wait_ready

CONTAINER_MODEL_DIR = "/opt/ml/model"
STOP_TIMEOUT_S = 30
_STARTED: set[str] = set()
_LOG_FILES: set[Path] = set()


def _remove_leftovers() -> None:
    for name in list(_STARTED):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    for path in _LOG_FILES:
        path.unlink(missing_ok=True)


atexit.register(_remove_leftovers)


class ContainerTarget:
    def __init__(
        self,
        image: str,
        model_dir: Path | None,
        env: dict[str, str] | None = None,
        *,
        docker_args: tuple[str, ...] = (),
        argv: tuple[str, ...] = ("serve",),
        network: str = "host",
    ):
        self.image = image
        self.name = f"qa-test-{uuid.uuid4().hex[:12]}"
        self.network = network
        if network == "host":
            self.port = free_port()
            self.env = {"SAGEMAKER_BIND_TO_PORT": str(self.port), "QA_BIND_HOST": "127.0.0.1", **(env or {})}
        else:
            self.port = int((env or {}).get("SAGEMAKER_BIND_TO_PORT", 8080))
            self.env = dict(env or {})
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.model_dir = model_dir
        self.docker_args = docker_args
        self.argv = argv
        self._log_file = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log", delete=False)
        self.log_path = Path(self._log_file.name)
        _LOG_FILES.add(self.log_path)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.ready_after_s: float | None = None
        self.exit_code: int | None = None

    def command(self) -> list[str]:
        cmd = ["docker", "run", "--rm", "--name", self.name, "--network", self.network, *self.docker_args]
        if self.model_dir is not None:
            cmd += ["-v", f"{Path(self.model_dir).resolve()}:{CONTAINER_MODEL_DIR}:ro"]
        for key, value in self.env.items():
            cmd += ["-e", f"{key}={value}"]
        return [*cmd, self.image, *self.argv]

    def start(self) -> ContainerTarget:
        _STARTED.add(self.name)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        return self

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def http_in_container(
        self, path: str, body: bytes | None = None, method: str | None = None, timeout_s: float = 10
    ) -> tuple[int, bytes]:
        """A request to 127.0.0.1 from inside the container's network namespace (the image's Python)."""
        script = (
            "import sys, urllib.request, urllib.error\n"
            "data = sys.stdin.buffer.read() or None\n"
            f"req = urllib.request.Request('{self.base_url}{path}', data=data, method={method!r}, "
            "headers={'Content-Type': 'application/json'})\n"
            "try:\n"
            f"    resp = urllib.request.urlopen(req, timeout={timeout_s})\n"
            "except urllib.error.HTTPError as exc:\n"
            "    resp = exc\n"
            "sys.stdout.write(str(resp.status) + '\\n'); sys.stdout.flush(); sys.stdout.buffer.write(resp.read())\n"
        )
        out = subprocess.run(
            ["docker", "exec", "-i", self.name, "python", "-c", script],
            input=body or b"",
            capture_output=True,
            timeout=timeout_s + 20,
        )
        if out.returncode != 0:
            raise ConnectionError(
                out.stderr.decode(errors="replace").strip().splitlines()[-1:] or "docker exec failed"
            )
        status, _, payload = out.stdout.partition(b"\n")
        return int(status), payload

    def _ping(self) -> bool:
        if self.network == "host":
            return requests.get(f"{self.base_url}/ping", timeout=2).status_code == 200
        try:
            return self.http_in_container("/ping")[0] == 200
        except (ConnectionError, subprocess.TimeoutExpired):
            return False

    def wait_ready(self, deadline_s: float = READY_TIMEOUT_S) -> float:
        """Seconds from `docker run` to the first 200 on /ping."""
        if self.network == "host":
            wait_ready(self, deadline_s, self.is_alive)
        else:
            while not self._ping():
                if not self.is_alive():
                    raise ServerDied(f"the container exited before it was ready; its logs:\n{self.logs()}")
                if time.monotonic() - self.started_at > deadline_s:
                    raise TimeoutError(
                        f"/ping not 200 within {deadline_s:.0f} s; the container's logs:\n{self.logs()}"
                    )
                time.sleep(0.5)
        self.ready_after_s = time.monotonic() - self.started_at
        return self.ready_after_s

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        self.exit_code = self.proc.wait(timeout=timeout_s)
        return self.exit_code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: int = STOP_TIMEOUT_S) -> int | None:
        """`docker stop` (SIGTERM, then SIGKILL after timeout_s); returns the container's exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            subprocess.run(
                ["docker", "stop", "--time", str(timeout_s), self.name], capture_output=True, check=False
            )
        try:
            self.exit_code = self.proc.wait(timeout=timeout_s + 15)
        except subprocess.TimeoutExpired:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)
            self.exit_code = self.proc.wait()
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)
        _STARTED.discard(self.name)
        self._log_file.close()
        return self.exit_code


def start_container_target(
    image: str, model_dir: Path | None, env: dict[str, str] | None = None, **kwargs
) -> ContainerTarget:
    return started_and_ready(ContainerTarget(image, model_dir, env, **kwargs))


def model_with_graphs(full_image: str, model_dir: Path, dest: Path, precisions: tuple[str, ...]) -> Path:
    """A copy of `model_dir` with the graphs `precisions` need in its graphs/ directory, made by
    `full_image` as `deploy package --graphs-from-image` makes them: what the slim image serves."""
    from deploy.package import export_graphs  # the repository root is on pytest's pythonpath

    shutil.copytree(model_dir, dest)
    export_graphs(full_image, dest, dest / "graphs", list(precisions), report=False)
    return dest
