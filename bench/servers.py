"""The servers under test, one at a time: the peer (the Hugging Face inference container's stack
in its own venv) and ours (the built image under Docker, or the host stack), plus the meter
that reads their CPU time and memory.

Every server runs in a session of its own (`setsid`; Docker gives each container one), so its
processes are found even after a daemonising parent exits (MMS's launcher leaves Java orphaned):
CPU is utime+stime+cutime+cstime from /proc/<pid>/stat summed over the session, memory is the
summed PSS from /proc/<pid>/smaps_rollup (shared weights counted once), sampled in a thread.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from qa.memory import process_bytes

REPO = Path(__file__).resolve().parent.parent
PEER_PINS = [
    "torch==2.13.0",
    "transformers==4.57.6",
    "sagemaker-huggingface-inference-toolkit==2.6.0",
    "multi-model-server==1.1.11",
    "setuptools<81",
]
PEER_WORKERS = 2
STOP_GRACE_S = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measuring a session's processes ---------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def session_pids(sid: int, root: int | None = None) -> set[int]:
    """Processes in session `sid`, plus descendants of `root` (in case one called setsid)."""
    parent: dict[int, int] = {}
    members = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        if int(fields[3]) == sid:
            members.add(pid)
    if root is not None:
        for pid in parent:
            p, hops = pid, 0
            while p > 1 and hops < 64:
                if p == root:
                    members.add(pid)
                    break
                p, hops = parent.get(p, 0), hops + 1
    return members


def _running(pid: int) -> bool:
    """False for a zombie (exited, not yet reaped) or a vanished process."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / _CLK_TCK


def memory_bytes(pids: set[int]) -> int:
    """Summed PSS (RSS where smaps_rollup is unreadable; a vanished process counts 0)."""
    return sum(process_bytes(pid) for pid in pids)


class Meter:
    """Samples a server's memory in a thread; CPU is read on demand (it is a counter)."""

    def __init__(self, server: Server, interval: float = 0.5):
        self.server, self.interval = server, interval
        self.peak = 0
        self.level_peak = 0
        self.cpu_at_mark = self.cpu_at_end = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)

    def __enter__(self) -> Meter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        used = memory_bytes(self.server.pids())
        self.peak = max(self.peak, used)
        self.level_peak = max(self.level_peak, used)
        return used

    def reset_level(self) -> None:
        self.level_peak = 0
        self.mark_cpu()

    def mark_cpu(self) -> None:
        """Remember the CPU counter now (the start of a measured window)."""
        self.cpu_at_mark = self.cpu_at_end = self.cpu()

    def mark_cpu_end(self) -> None:
        """Remember the CPU counter now (the end of a measured window)."""
        self.cpu_at_end = self.cpu()

    def cpu(self) -> float:
        return cpu_seconds(self.server.pids())


# --- the servers -----------------------------------------------------------------------------


class Server:
    """One server under test. start() launches it; the caller polls for the first answer."""

    kind = "?"

    def __init__(self, name: str, model_dir: Path, work_dir: Path, extra_env: dict[str, str] | None = None):
        self.name, self.model_dir, self.extra_env = name, model_dir, dict(extra_env or {})
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work_dir))
        self.port = 0
        self.t_launch = 0.0
        self._sid: int | None = None
        self._root: int | None = None

    def pids(self) -> set[int]:
        return session_pids(self._sid, self._root) if self._sid else set()

    def start(self, port: int) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def log_tail(self, lines: int = 40) -> str:
        raise NotImplementedError

    def describe(self) -> dict:
        """Versions and footprint for the report."""
        return {}


class _ProcessServer(Server):
    """A server started as a local process tree in its own session."""

    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    def _launch(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log_path = self.work_dir / "server.log"
        log = open(self.log_path, "wb")
        self.t_launch = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._sid = self._root = self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _terminate_session(self) -> None:
        """SIGTERM the leader, wait for the grace period, then SIGKILL whatever is left of the session."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while (left := {p for p in self.pids() if _running(p)}) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AttributeError):
            return "(no log)"


class PeerServer(_ProcessServer):
    """The Hugging Face inference toolkit + MMS, as the Hugging Face container starts it."""

    kind = "peer"
    MMS_PROPERTIES = Path("/etc/sagemaker-mms.properties")  # the toolkit writes it there, always

    def __init__(self, name: str, model_dir: Path, work_dir: Path, venv: Path, extra_env=None):
        super().__init__(name, model_dir, work_dir, extra_env)
        self.venv = venv
        self._created_properties = False

    def start(self, port: int) -> None:
        self.port = port
        # SAGEMAKER_BASE_DIR moves the toolkit's /opt/ml to a scratch dir: <base>/model is the model.
        base = self.work_dir / "ml"
        base.mkdir()
        (base / "model").symlink_to(self.model_dir.resolve(), target_is_directory=True)
        self._created_properties = not self.MMS_PROPERTIES.exists()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QA_", "SAGEMAKER_", "HF_"))}
        env.update(
            PATH=f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            HF_TASK="question-answering",
            SAGEMAKER_BIND_TO_PORT=str(port),
            SAGEMAKER_MODEL_SERVER_WORKERS=str(PEER_WORKERS),
            SAGEMAKER_BASE_DIR=str(base),
            HF_HUB_OFFLINE="1",
        )
        env.update(self.extra_env)
        code = "import sagemaker_huggingface_inference_toolkit.mms_model_server as m; m.start_model_server()"
        self._launch([str(self.venv / "bin" / "python"), "-c", code], env, self.work_dir)

    def stop(self) -> None:
        try:
            if self._mms_pid() in self.pids():  # its pid file is global: never stop someone else's MMS
                subprocess.run(
                    [str(self.venv / "bin" / "multi-model-server"), "--stop"],
                    cwd=self.work_dir,
                    env={**os.environ, "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}"},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                    check=False,
                )
        finally:
            self._terminate_session()
            if self._created_properties:
                self.MMS_PROPERTIES.unlink(missing_ok=True)

    @staticmethod
    def _mms_pid() -> int | None:
        try:
            return int((Path(tempfile.gettempdir()) / ".model_server.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, lines: int = 40) -> str:
        mms_log = self.work_dir / "logs" / "model_log.log"
        tail = super().log_tail(lines)
        if mms_log.exists():
            tail += "\n--- model_log.log ---\n" + "\n".join(
                mms_log.read_text(errors="replace").splitlines()[-lines:]
            )
        return tail

    def describe(self) -> dict:
        return {
            "stack": "HF inference toolkit 2.6.0 + MMS 1.1.11 (venv)",
            "pins": " ".join(PEER_PINS),
            "workers": PEER_WORKERS,
            "size_bytes": _du(self.venv),
            "size_what": "venv on disk",
        }


class HostServer(_ProcessServer):
    """Ours, the host stack: `python entrypoint.py serve` from the work tree."""

    kind = "host"

    def __init__(self, name: str, model_dir: Path, work_dir: Path, python: str, extra_env=None):
        super().__init__(name, model_dir, work_dir, extra_env)
        self.python = python

    def start(self, port: int) -> None:
        self.port = port
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QA_", "SAGEMAKER_", "HF_"))}
        env.update(
            QA_MODEL_DIR=str(self.model_dir.resolve()),
            SAGEMAKER_BIND_TO_PORT=str(port),
            QA_BIND_HOST="127.0.0.1",
            QA_RUN_DIR=str(self.work_dir / "run"),
            HF_HUB_OFFLINE="1",
        )
        env.update(self.extra_env)
        self._launch([self.python, "entrypoint.py", "serve"], env, REPO)

    def stop(self) -> None:
        self._terminate_session()

    def describe(self) -> dict:
        return {
            "stack": f"host: {self.python} entrypoint.py serve",
            **_git_revision(),
            "versions": _python_versions(self.python),
        }


class ImageServer(Server):
    """Ours, the built image under Docker (host network, model mounted read-only)."""

    kind = "image"

    def __init__(self, name: str, model_dir: Path, work_dir: Path, image: str, extra_env=None):
        super().__init__(name, model_dir, work_dir, extra_env)
        self.image = image
        self.container = f"qa-bench-{os.getpid()}-{name}".replace("=", "-").replace(",", "-")

    def start(self, port: int) -> None:
        self.port = port
        env = {"SAGEMAKER_BIND_TO_PORT": str(port), "QA_BIND_HOST": "127.0.0.1", **self.extra_env}
        cmd = [
            "docker",
            "run",
            "-d",
            "--name",
            self.container,
            "--network",
            "host",
            "-v",
            f"{self.model_dir.resolve()}:/opt/ml/model:ro",
        ]
        for key, value in env.items():
            cmd += ["-e", f"{key}={value}"]
        self.t_launch = time.perf_counter()
        subprocess.run(cmd + [self.image, "serve"], check=True, stdout=subprocess.DEVNULL)
        pid = int(_docker("inspect", "-f", "{{.State.Pid}}", self.container) or 0)
        if pid:
            self._root = pid
            fields = stat_fields(pid)
            self._sid = int(fields[3]) if fields else pid

    def alive(self) -> bool:
        return _docker("inspect", "-f", "{{.State.Running}}", self.container) == "true"

    def stop(self) -> None:
        subprocess.run(
            ["docker", "stop", "-t", str(int(STOP_GRACE_S)), self.container],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=STOP_GRACE_S + 30,
        )
        subprocess.run(
            ["docker", "rm", "-f", self.container],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )

    def log_tail(self, lines: int = 40) -> str:
        out = subprocess.run(
            ["docker", "logs", "--tail", str(lines), self.container],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout + out.stderr

    def describe(self) -> dict:
        info = json.loads(_docker("image", "inspect", self.image) or "[{}]")[0]
        labels = (info.get("Config") or {}).get("Labels") or {}
        return {
            "stack": f"image {self.image}",
            "image_id": (info.get("Id") or "")[:19],
            "version": labels.get("org.opencontainers.image.version", ""),
            "revision": labels.get("org.opencontainers.image.revision", ""),
            "size_bytes": info.get("Size"),
            "size_what": "image",
        }


def _docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=60)
    return out.stdout.strip()


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _python_versions(python: str) -> str:
    """Pinned versions of the packages that set the speed, read without importing them."""
    code = (
        "import importlib.metadata as m\n"
        "for p in ('torch', 'transformers', 'tokenizers', 'onnxruntime', 'gunicorn'):\n"
        "    try: print(f'{p}=={m.version(p)}', end=' ')\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    return out.stdout.strip()


def _git_revision() -> dict[str, str]:
    """The work tree's commit, and a version like build.sh's image label: -dirty when what the
    server runs (the same paths build.sh checks) differs from the commit."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return out.stdout.strip()

    revision = git("rev-parse", "HEAD")
    if not revision:
        return {"revision": "", "version": ""}
    version = git("rev-parse", "--short=12", "HEAD")
    if git(
        "status",
        "--porcelain",
        "--",
        "Dockerfile",
        "requirements.txt",
        "entrypoint.py",
        "serving",
        "code",
        "docker",
    ):
        version += "-dirty"
    return {"revision": revision, "version": version}


def ensure_peer_venv(venv: Path, pip_args: list[str] = ()) -> Path:
    """Create the peer's venv with its pinned stack when it is missing (about 1.6 GB, a few minutes).

    Where PyPI's default torch is the CUDA build, pass the CPU index in `pip_args`
    (`--extra-index-url https://download.pytorch.org/whl/cpu`), as the HF CPU container has it.
    """
    if (venv / "bin" / "multi-model-server").exists():
        return venv
    if shutil.which("java") is None:
        sys.exit(
            "bench: the peer (multi-model-server) needs Java 17: apt-get install -y openjdk-17-jre-headless"
        )
    print(f"bench: creating the peer venv at {venv}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *pip_args, *PEER_PINS], check=True)
    return venv
