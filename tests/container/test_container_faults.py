"""Faults under load on the image: the scenarios of tests/process/test_process_faults.py (driven by
tests/process/process_helpers.py), against `docker run IMAGE serve` on 127.0.0.1 (host network).

Workers are found and killed inside the container (`docker exec ... python`: pids of the
container's namespace); SIGTERM is `docker kill --signal SIGTERM`, and the exit code is the one
`docker run` returns, as SageMaker sees it. The traced slow user code's gate directory is mounted
into the container at the same path, so the test and the workers share it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from target import ContainerTarget
from targets import TINY_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "process"))
from process_helpers import (  # noqa: E402
    FIRST_200_WITH_A_SURVIVOR_S,
    NORMAL_P99_S,
    QUICK,
    RESPAWN_READY_S,
    TINY_QUESTION,
    LoadLoop,
    budget_spent_while_waiting,
    burst_past_the_queue,
    check_budget_spent_run,
    check_burst_run,
    check_sigterm_run,
    error_shape_problem,
    fmt_s,
    kill_worker_holding_requests,
    kill_worker_under_load,
    make_traced_slow_model_dir,
    percentile,
    send,
    sigterm_under_load,
    slow_clients_and_normal_requests,
    sort_kill_run,
)

pytestmark = [pytest.mark.container, pytest.mark.slow]


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


def docker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


class ContainerControl:
    """process_helpers' `ctl` for a ContainerTarget."""

    def __init__(self, target: ContainerTarget):
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


@pytest.fixture(scope="module")
def _tiny_container(image: str):
    target = ContainerTarget(image, TINY_MODEL, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    target.start()
    try:
        target.wait_ready()
        target.canary = send(target.base_url, TINY_QUESTION, "canary").json()
        yield target
    finally:
        target.stop()


@pytest.fixture
def tiny_container(request: pytest.FixtureRequest, _tiny_container: ContainerTarget) -> ContainerTarget:
    """The tiny model, two workers, default limits; shared by the module, its logs on a failure."""
    request.node.qa_containers = [_tiny_container]
    return _tiny_container


@pytest.fixture
def traced_container(image: str, containers, tmp_path):
    """Traced slow user code, its gate directory mounted at the same path: `traced_container(env)`."""
    made = []

    def start(env: dict[str, str]) -> ContainerTarget:
        model_dir, gates = make_traced_slow_model_dir(tmp_path)
        target = containers(image, model_dir, env, docker_args=("-v", f"{gates}:{gates}"))
        target.gates = gates
        made.append(target)
        return target

    yield start
    for target in made:
        (target.gates / "release-requests").touch()


def test_many_slow_clients_do_not_delay_normal_requests(tiny_container):
    """50 connections trickle their request over 2-6 s (25 the headers, 25 the body): normal
    requests' p99 stays under 2 s; every slow client is answered 200 in the end."""
    run = slow_clients_and_normal_requests(tiny_container.base_url, TINY_QUESTION, slow=50, over_s=4.0)
    for outcome in run.baseline + run.normal + run.slow:
        assert outcome.status == 200, outcome.describe()
        assert outcome.json() == tiny_container.canary, outcome.describe()
    latencies = [o.seconds for o in run.normal]
    p99 = percentile(latencies, 99)
    print(
        f"\nslow clients: {len(latencies)} normal requests, p50 {percentile(latencies, 50) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms (alone: p50 {percentile([o.seconds for o in run.baseline], 50) * 1000:.0f} ms)"
    )
    assert len(latencies) >= 20
    assert p99 < NORMAL_P99_S, f"normal requests' p99 {p99:.2f} s with 50 slow clients"


def test_clients_past_the_workers_threads_wait_and_are_all_served(tiny_container):
    """96 closed-loop clients for 3 s against 2 workers x 16 in service: the rest wait their turn,
    so every answer is the canary's 200, no 503, no hang."""
    with LoadLoop(tiny_container.base_url, TINY_QUESTION, 96, name="burst", max_s=10.0) as load:
        time.sleep(3.0)
    outcomes = load.stop()
    print(f"\n96 clients: {len(outcomes)} requests, statuses {sorted({o.status for o in outcomes}, key=str)}")
    for outcome in outcomes:
        assert outcome.status == 200 and outcome.json() == tiny_container.canary, outcome.describe()
    assert max(o.seconds for o in outcomes) < 20


def test_sigkill_of_a_busy_worker_under_load(tiny_container):
    """8 clients on 2 workers; the busier worker is SIGKILLed inside the container: only requests in
    flight at the kill fail (nginx's JSON 502, never a truncated 200); later ones are 200 (the
    canary) or the loading replacement's 503 (whose Retry-After the clients honour); the
    replacement is ready within 30 s; at least 90% are 200."""
    ctl = ContainerControl(tiny_container)
    workers_before = set(ctl.worker_cpu())
    run = kill_worker_under_load(ctl, TINY_QUESTION, clients=8)
    kinds, problems = sort_kill_run(run, tiny_container.canary)
    first_200 = run.first_200_after_kill_s()
    print(
        f"\nkill under load: {len(run.outcomes)} requests: {dict(kinds)}; first 200 {fmt_s(first_200)} "
        f"after the kill, replacement ready after {fmt_s(run.respawn_ready_s)}"
    )
    assert not problems, "\n".join(problems[:10])
    assert kinds["502"] <= 8
    assert kinds["200"] >= 0.9 * len(run.outcomes)
    assert first_200 is not None and first_200 < FIRST_200_WITH_A_SURVIVOR_S
    assert run.respawn_ready_s is not None and run.respawn_ready_s < RESPAWN_READY_S
    workers_after = set(ctl.worker_cpu())
    assert len(workers_after) == 2 and run.victim not in workers_after
    assert len(workers_after - workers_before) == 1
    assert tiny_container.is_alive()


def test_sigkill_fails_exactly_the_killed_workers_requests(traced_container):
    """Each of 2 workers holds its whole limit (3) inside the user code; one is SIGKILLed: its 3 get
    nginx's JSON 502, the other worker's 3 answer 200 once released, the replacement serves."""
    target = traced_container({"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "QA_THREADS_PER_WORKER": "3"})
    run = kill_worker_holding_requests(ContainerControl(target), target.gates, per_worker=3)
    print(f"\nheld requests, worker killed: replacement ready after {fmt_s(run.respawn_ready_s)}")
    assert len(run.victim_outcomes) == 3
    for outcome in run.victim_outcomes:
        problem = error_shape_problem(outcome, 502)
        assert problem is None, problem
    assert run.others_pending_after_kill == 3
    for outcome in run.other_outcomes:
        assert outcome.status == 200 and outcome.json()["answer"] == "done", outcome.describe()
    assert run.respawn_ready_s is not None and run.respawn_ready_s < RESPAWN_READY_S
    for outcome in run.after:
        assert outcome.status == 200, outcome.describe()


def test_sigterm_under_load_drains_then_refuses_new_connections(traced_container):
    """`docker kill --signal SIGTERM` with 3 requests held in the user code and 4 quick clients:
    the held ones answer 200, quick ones before the signal are 200, new connections are refused
    once nginx stops listening (reset when they race with the close); `docker run` exits 0
    within 30 s."""
    target = traced_container({"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "QA_THREADS_PER_WORKER": "8"})
    run = sigterm_under_load(ContainerControl(target), target.gates, held=3, clients=4)
    check_sigterm_run(run, target.logs())


def test_a_burst_past_the_queue_is_refused_by_nginx_and_the_admitted_are_all_served(traced_container):
    """One worker serving 2 with 3 allowed to wait; 100 blocked requests at once: 2 in the user
    code, 3 waiting, 95 refused by nginx (503, Retry-After, within 2 s, none reaching the app);
    /ping stays 200; the 5 admitted answer 200 once released."""
    env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "QA_THREADS_PER_WORKER": "2",
        "QA_MAX_WAITING_REQUESTS": "3",
    }
    target = traced_container(env)
    run = burst_past_the_queue(
        target.base_url, target.gates, ContainerControl(target).worker_cpu, count=100, served=2, waiting=3
    )
    print(f"\nburst of 100 past 2 served + 3 waiting: worker CPU {run.worker_cpu_s:.3f} s for 95 refusals")
    check_burst_run(run, count=100, served=2, waiting=3)
    assert send(target.base_url, QUICK, "after").status == 200


def test_requests_whose_budget_ran_out_while_waiting_are_dropped_before_the_user_code(traced_container):
    """A 3 s budget, one worker serving 1: 3 quick requests queued behind one held past its budget
    are 503s with Retry-After that never reached input_fn."""
    env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
        "QA_THREADS_PER_WORKER": "1",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3",
    }
    target = traced_container(env)
    run = budget_spent_while_waiting(target.base_url, target.gates, waiting=3)
    check_budget_spent_run(run, waiting=3)
