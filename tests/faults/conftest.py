"""The stacks the fault suite breaks, one per target (`stack_kind`, parametrized in
tests/conftest.py from --targets: host, container): the host stack (`python entrypoint.py serve`)
or `docker run IMAGE serve` on 127.0.0.1 (host network, --image).

Each stack carries `ctl`, what the scenarios (fault_scenarios.py) drive: base_url, logs(),
worker_cpu() -> {worker pid: CPU seconds}, kill_worker(pid), sigterm(), wait_exit(timeout_s).
On the host the workers are the gunicorn master's children; in the image they are found and
killed inside the container (`docker exec ... python`: pids of the container's namespace),
SIGTERM is `docker kill --signal SIGTERM` and the exit code the one `docker run` returns, as
SageMaker sees it. The traced slow user code's gate directory is mounted into the container at
the same path, so the test and the workers share it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from fault_scenarios import TINY_QUESTION, make_traced_slow_model_dir, send
from process_helpers import child_pid, children_of
from targets import TINY_MODEL, HostTarget, started_and_ready

from bench.servers import stat_fields

_CLK_TCK = os.sysconf("SC_CLK_TCK")

# The gunicorn master's children and their CPU seconds, from inside the container.
_WORKERS = """
import json, os
me, procs = os.getpid(), {}
for d in os.listdir('/proc'):
    if not d.isdigit() or int(d) == me:
        continue
    try:
        stat = open(f'/proc/{d}/stat').read()
        gunicorn = b'gunicorn' in open(f'/proc/{d}/cmdline', 'rb').read()
    except OSError:
        continue
    f = stat[stat.rfind(')') + 2:].split()
    procs[int(d)] = (int(f[1]), gunicorn, (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'))
masters = {p for p, (pp, g, _) in procs.items() if g and not procs.get(pp, (0, False))[1]}
print(json.dumps({p: cpu for p, (pp, g, cpu) in procs.items() if pp in masters}))
"""


class HostControl:
    """The `ctl` of a HostTarget: workers are the gunicorn master's children."""

    def __init__(self, target: HostTarget):
        self.target = target
        self.base_url = target.base_url

    def logs(self) -> str:
        return self.target.logs()

    def master(self) -> int:
        return child_pid(self.target.proc.pid, "gunicorn")

    def worker_cpu(self) -> dict[int, float]:
        cpu = {}
        for pid in children_of(self.master()):
            fields = stat_fields(pid)
            if fields is not None:
                cpu[pid] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        return cpu

    def kill_worker(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)

    def sigterm(self) -> None:
        self.target.signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float) -> int:
        return self.target.wait_exit(timeout_s)


def docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


class ContainerControl:
    """The `ctl` of a ContainerTarget (tests/container/target.py)."""

    def __init__(self, target):
        self.target = target
        self.base_url = target.base_url

    def logs(self) -> str:
        return self.target.logs()

    def worker_cpu(self) -> dict[int, float]:
        out = docker("exec", self.target.name, "python", "-c", _WORKERS)
        assert out.returncode == 0, out.stderr
        return {int(pid): cpu for pid, cpu in json.loads(out.stdout).items()}

    def kill_worker(self, pid: int) -> None:
        out = docker("exec", self.target.name, "python", "-c", f"import os; os.kill({pid}, 9)")
        assert out.returncode == 0, out.stderr

    def sigterm(self) -> None:
        out = docker("kill", "--signal", "SIGTERM", self.target.name)
        assert out.returncode == 0, out.stderr

    def wait_exit(self, timeout_s: float) -> int:
        return self.target.wait_exit(timeout_s)


def new_stack(
    request: pytest.FixtureRequest, kind: str, model_dir: Path, env: dict[str, str], workdir: Path, gates=None
):
    """A started, ready stack of `kind` with its `ctl` (and `gates`, mounted into a container)."""
    if kind == "host":
        target = HostTarget(model_dir, workdir, env)
        control = HostControl
    else:
        image = request.getfixturevalue("target_image")
        mounts = ("-v", f"{gates}:{gates}") if gates is not None else ()
        target = request.getfixturevalue("container_target").ContainerTarget(
            image, model_dir, env, docker_args=mounts
        )
        control = ContainerControl
    started_and_ready(target)
    target.ctl, target.gates = control(target), gates
    return target


@pytest.fixture(scope="module")
def _tiny_stack(request: pytest.FixtureRequest, stack_kind: str, tmp_path_factory):
    target = new_stack(
        request,
        stack_kind,
        TINY_MODEL,
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        tmp_path_factory.mktemp(f"faults-tiny-{stack_kind}"),
    )
    try:
        target.canary = send(target.base_url, TINY_QUESTION, "canary").json()
        yield target
    finally:
        target.stop()


@pytest.fixture
def tiny_stack(request: pytest.FixtureRequest, _tiny_stack):
    """The tiny model, two workers, default limits (16 served at once per worker); shared by the
    module, its logs on a failure."""
    request.node.qa_stacks = [_tiny_stack]
    return _tiny_stack


@pytest.fixture
def start_stack(request: pytest.FixtureRequest, stack_kind: str, tmp_path: Path):
    """`start_stack(env)`: the tiny model with `env`; `start_stack(env, traced=True)`: the traced slow
    user code (fault_scenarios) instead, its gates in `.gates`. Stopped after the test (the gate
    opened first)."""
    made: list = []
    request.node.qa_stacks = made

    def start(env: dict[str, str], traced: bool = False):
        root = tmp_path / f"stack-{len(made)}"
        model_dir, gates = make_traced_slow_model_dir(root) if traced else (TINY_MODEL, None)
        target = new_stack(request, stack_kind, model_dir, env, root, gates)
        made.append(target)
        return target

    yield start
    for target in made:
        if target.gates is not None:
            (target.gates / "release-requests").touch()
        target.stop()
