"""The fault scenarios (tests/faults/test_faults.py), driven the same way on the host stack and on
the image: a traced variant of process_helpers' slow user code (`received-<id>` holds the worker's
pid), a client that records outcomes instead of raising (`send`, `LoadLoop`), the JSON error-shape
check, a client that trickles its request byte by byte (`slow_request`), and each scenario's run
and checks.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from process_helpers import GATED_CODE, GATED_PREDICT_FN, make_slow_model_dir, wait_for

from bench import loadgen

# process_helpers.SLOW_INFERENCE, but input_fn writes its worker's pid into `received-<id>` (renamed
# into place, so a reader never sees it empty): a test knows which worker holds which request. A
# body {"hold": true} waits for `release-requests` in input_fn, which runs on many threads at once,
# so unlike {"block": true} (in predict_fn, one request at a time per worker) it does not stop the
# worker's other requests.
TRACED_SLOW_INFERENCE = (
    GATED_CODE
    + """

def input_fn(body, content_type, context):
    # Per process: two workers' warm-ups share the request id "warm-up".
    partial = GATES / f".received-{{context.request_id}}-{{os.getpid()}}"
    partial.write_text(str(os.getpid()))
    partial.rename(GATES / f"received-{{context.request_id}}")
    data = json.loads(body)
    if isinstance(data, dict) and data.get("hold"):
        _wait("release-requests")
    return data
"""
    + GATED_PREDICT_FN
)

BLOCK = b'{"block": true}'
HOLD = b'{"hold": true}'
QUICK = b'{"block": false}'
TINY_QUESTION = json.dumps(
    {"inputs": {"question": "Where is the harbour?", "context": "The harbour lies south of the town."}}
).encode()


def make_traced_slow_model_dir(root: Path) -> tuple[Path, Path]:
    """(model_dir, gates_dir) like make_slow_model_dir, with `received-<id>` holding the worker's pid."""
    return make_slow_model_dir(root, TRACED_SLOW_INFERENCE)


def received_pid(gates: Path, request_id: str) -> int | None:
    """The pid of the worker whose input_fn took `request_id` (traced slow code), or None yet."""
    try:
        return int((gates / f"received-{request_id}").read_text())
    except FileNotFoundError:
        return None


def received_ids(gates: Path) -> set[str]:
    return {p.name.removeprefix("received-") for p in gates.glob("received-*")} - {"warm-up"}


@dataclasses.dataclass
class Outcome:
    """One request as the client saw it: a status (and body), or the connection error instead."""

    request_id: str
    started: float
    ended: float = 0.0
    status: int | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    head_status: int | None = None  # the status line, even when the body then failed to arrive

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def json(self):
        return json.loads(self.body)

    def describe(self) -> str:
        what = self.error or f"{self.status} {self.body[:200]!r}"
        return f"{self.request_id} after {self.seconds:.2f} s: {what}"


def send(
    base_url: str,
    body: bytes,
    request_id: str,
    timeout_s: float = 60.0,
    path: str = "/invocations",
    close: bool = True,
) -> Outcome:
    """POST `body`, each request on a connection of its own (Connection: close unless `close` is
    False); a connection-level failure is recorded, not raised."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    outcome = Outcome(request_id, time.monotonic())
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        if close:
            headers["Connection"] = "close"
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        outcome.head_status = resp.status
        outcome.body = resp.read()
        outcome.status = resp.status
        outcome.headers = {k.lower(): v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
        outcome.ended = time.monotonic()
    return outcome


def error_shape_problem(outcome: Outcome, status: int) -> str | None:
    """None when `outcome` is `status` with the contract's JSON error body, else what is wrong."""
    if outcome.status != status:
        return f"expected {status}: {outcome.describe()}"
    if not outcome.headers.get("content-type", "").startswith("application/json"):
        return f"not JSON: {outcome.headers.get('content-type')!r}: {outcome.describe()}"
    try:
        body = outcome.json()
    except ValueError:
        return f"body is not JSON: {outcome.describe()}"
    if not isinstance(body, dict) or set(body) != {"code", "type", "message"} or body["code"] != status:
        return f"not the error shape: {outcome.describe()}"
    if status == 503 and not outcome.headers.get("retry-after", "").isdigit():
        return f"503 without a numeric Retry-After: {outcome.headers}"
    return None


def retry_pause_s(outcome: Outcome) -> float:
    """How long a client waits before its next request after a failure: a 503's Retry-After, as
    the benchmark's clients wait (bench/loadgen.py)."""
    return loadgen.retry_pause_s(
        (outcome.headers or {}).get("retry-after", "") if outcome.status == 503 else ""
    )


class LoadLoop:
    """`clients` threads POSTing `body` back to back (own connection each time, so a refused
    connection shows as one) until stopped, pausing after a failure (`retry_pause_s`); every
    outcome is kept. The benchmark's closed loop (bench/loadgen.py), bounded: stopped after at
    most `max_s` whatever the caller does."""

    def __init__(self, base_url: str, body: bytes, clients: int, name: str = "load", max_s: float = 60.0):
        self.base_url, self.body, self.name = base_url, body, name
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._loop = loadgen.ClosedLoop(clients, self._step, name=name, max_s=max_s)

    def _step(self, client, index: int, n: int) -> float:
        outcome = send(self.base_url, self.body, f"{self.name}-{index}-{n}", timeout_s=30)
        with self._lock:
            self.outcomes.append(outcome)
        return 0.0 if outcome.status == 200 else retry_pause_s(outcome)

    def __enter__(self) -> LoadLoop:
        self._loop.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        assert self._loop.stop(join_s=40), "a load thread is still waiting for an answer"
        with self._lock:
            return sorted(self.outcomes, key=lambda o: o.started)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def slow_request(
    base_url: str, body: bytes, request_id: str, trickle: str, over_s: float, timeout_s: float = 60.0
) -> Outcome:
    """One POST over a raw socket whose headers (`trickle="headers"`) or body (`"body"`) go out one
    byte at a time, spread over `over_s` seconds; then the answer is read."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    slow, fast = (head, b"") if trickle == "headers" else (body, head)
    outcome = Outcome(request_id, time.monotonic())
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if fast:
                sock.sendall(fast)
            pause = over_s / len(slow)
            for i in range(len(slow)):
                sock.sendall(slow[i : i + 1])
                time.sleep(pause)
            if trickle == "headers":
                sock.sendall(body)
            resp = http.client.HTTPResponse(sock)
            try:
                resp.begin()
                outcome.body = resp.read()
                outcome.status = resp.status
                outcome.headers = {k.lower(): v for k, v in resp.getheaders()}
            finally:
                resp.close()
    except (OSError, http.client.HTTPException) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.ended = time.monotonic()
    return outcome


def ready_worker_lines(logs: str) -> int:
    """How many workers have passed their warm-up so far (serving/runtime.py logs one line each)."""
    return logs.count("; worker ready")


def respawn_ready_after(ctl, ready_before: int, killed_at: float, timeout_s: float) -> float | None:
    """Seconds from the kill to the replacement's "worker ready" line (more than `ready_before`
    such lines), or None when it did not come within `timeout_s`."""
    while time.monotonic() - killed_at < timeout_s:
        if ready_worker_lines(ctl.logs()) > ready_before:
            return time.monotonic() - killed_at
        time.sleep(0.1)
    return None


# Fault scenarios, driven the same way on the host stack and on the image. `ctl` is the stack
# under test: base_url, logs(), worker_cpu() -> {worker pid: CPU seconds}, kill_worker(pid),
# sigterm(), wait_exit(timeout_s) -> exit code. The scenarios only drive and record; the test
# files assert.


def hold_requests(
    base_url: str,
    gates: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
    count: int,
    per_worker: int | None = None,
    attempts: int = 400,
    body: bytes = BLOCK,
) -> dict[str, tuple[int, concurrent.futures.Future]]:
    """Blocked requests until `count` are held in input_fn/predict_fn (traced slow code): request
    id -> (worker pid, future). With `per_worker`, each worker must hold at most `per_worker` (a
    full worker takes no more: serving/gunicorn_worker.py); a refused request (503) is retried."""
    held: dict[str, tuple[int, concurrent.futures.Future]] = {}
    for n in range(attempts):
        if len(held) == count:
            return held
        rid = f"held-{n}"
        future = pool.submit(send, base_url, body, rid)
        wait_for(
            lambda rid=rid, future=future: received_pid(gates, rid) is not None or future.done(),
            30,
            f"{rid} to be taken or refused",
        )
        pid = received_pid(gates, rid)
        if pid is None:
            problem = error_shape_problem(future.result(), 503)
            assert problem is None, problem
            continue
        held[rid] = (pid, future)
        if per_worker is not None:
            counts = collections.Counter(p for p, _ in held.values())
            assert counts[pid] <= per_worker, f"worker {pid} took more than {per_worker}: {counts}"
    raise AssertionError(f"only {len(held)} of {count} requests held after {attempts} attempts")


@dataclasses.dataclass
class KillRun:
    victim: int
    killed_at: float  # when the kill had been done (for the image, `docker exec` had returned)
    outcomes: list[Outcome]
    respawn_ready_s: float | None  # from the kill to the replacement's "worker ready" log line
    kill_sent_at: float = 0.0  # just before the kill was asked for

    def first_200_after_kill_s(self) -> float | None:
        done = [o.ended for o in self.outcomes if o.status == 200 and o.started >= self.killed_at]
        return min(done) - self.killed_at if done else None


def kill_worker_under_load(
    ctl, body: bytes, clients: int, warm_s: float = 2.0, after_s: float = 2.0, respawn_timeout_s: float = 30.0
) -> KillRun:
    """Closed-loop load; SIGKILL the busiest worker; keep the load on until its replacement is
    ready (at most `respawn_timeout_s`) and `after_s` more."""
    cpu_before = ctl.worker_cpu()
    ready_before = ready_worker_lines(ctl.logs())
    with LoadLoop(
        ctl.base_url, body, clients, name="load", max_s=warm_s + respawn_timeout_s + after_s + 10
    ) as load:
        time.sleep(warm_s)
        cpu_after = ctl.worker_cpu()
        victim = max(cpu_after, key=lambda pid: cpu_after[pid] - cpu_before.get(pid, 0.0))
        kill_sent_at = time.monotonic()
        ctl.kill_worker(victim)
        killed_at = time.monotonic()
        respawn_ready_s = respawn_ready_after(ctl, ready_before, killed_at, respawn_timeout_s)
        time.sleep(after_s)
        outcomes = load.stop()
    return KillRun(victim, killed_at, outcomes, respawn_ready_s, kill_sent_at)


@dataclasses.dataclass
class HeldKillRun:
    victim: int
    victim_outcomes: list[Outcome]  # the killed worker's held requests
    others_pending_after_kill: int  # the other worker's held requests still unanswered then
    other_outcomes: list[Outcome]  # the other worker's, after the gate opened
    respawn_ready_s: float | None
    after: list[Outcome]  # quick requests once the replacement is ready


def kill_worker_holding_requests(
    ctl, gates: Path, per_worker: int, respawn_timeout_s: float = 30.0
) -> HeldKillRun:
    """Two workers each hold `per_worker` blocked requests (their whole in-flight limit); SIGKILL
    one; then open the gate."""
    ready_before = ready_worker_lines(ctl.logs())
    with concurrent.futures.ThreadPoolExecutor(4 * per_worker) as pool:
        held = hold_requests(ctl.base_url, gates, pool, 2 * per_worker, per_worker=per_worker)
        victim = next(iter(held.values()))[0]
        mine = [f for pid, f in held.values() if pid == victim]
        others = [f for pid, f in held.values() if pid != victim]
        ctl.kill_worker(victim)
        killed_at = time.monotonic()
        victim_outcomes = [f.result(timeout=20) for f in mine]
        time.sleep(0.5)
        pending = sum(not f.done() for f in others)
        respawn_ready_s = respawn_ready_after(ctl, ready_before, killed_at, respawn_timeout_s)
        (gates / "release-requests").touch()
        other_outcomes = [f.result(timeout=30) for f in others]
    after = [send(ctl.base_url, QUICK, f"after-{i}", timeout_s=30) for i in range(10)]
    return HeldKillRun(victim, victim_outcomes, pending, other_outcomes, respawn_ready_s, after)


@dataclasses.dataclass
class SigtermRun:
    signal_sent_at: float  # just before the signal was asked for
    signalled_at: float  # when it had been sent (for the image, `docker kill` had returned)
    drain_started_s: float  # from the signal to the supervisor's "stopping nginx" line
    held: list[Outcome]  # in flight (inside the user code) when the signal came
    load: list[Outcome]  # the quick load, before and after the signal
    exit_code: int
    exit_s: float  # from just before the signal to the exit


def sigterm_under_load(
    ctl, gates: Path, held: int = 3, clients: int = 4, after_s: float = 1.5, exit_timeout_s: float = 30.0
) -> SigtermRun:
    """Requests held inside the user code (in input_fn: the workers keep serving) plus a quick
    closed-loop load; SIGTERM; the load goes on for `after_s`, then the gate opens; the stack's
    exit is awaited."""
    with concurrent.futures.ThreadPoolExecutor(held) as pool:
        futures = [f for _, f in hold_requests(ctl.base_url, gates, pool, held, body=HOLD).values()]
        with LoadLoop(ctl.base_url, QUICK, clients, name="load", max_s=30) as load:
            time.sleep(1.0)
            signal_sent_at = time.monotonic()
            ctl.sigterm()
            signalled_at = time.monotonic()
            wait_for(lambda: "stopping nginx" in ctl.logs(), 10, "the supervisor to stop nginx")
            drain_started_s = time.monotonic() - signalled_at
            time.sleep(after_s)
            (gates / "release-requests").touch()
            held_outcomes = [f.result(timeout=30) for f in futures]
            outcomes = load.stop()
    left = max(1.0, signalled_at + exit_timeout_s - time.monotonic())
    code = ctl.wait_exit(left)
    return SigtermRun(
        signal_sent_at,
        signalled_at,
        drain_started_s,
        held_outcomes,
        outcomes,
        code,
        time.monotonic() - signal_sent_at,
    )


@dataclasses.dataclass
class BurstRun:
    served: set[str]  # request ids that reached the user code while the gate was closed
    refused: list[Outcome]  # answered while the served ones were held
    ping: Outcome  # /ping during the burst
    outcomes: list[Outcome]  # all of them, once the gate opened
    seconds: float  # from the burst to its last answer
    worker_cpu_s: float  # CPU time the gunicorn workers spent from the burst to the refusals
    app_503s: float  # 503s the app itself answered (its /metrics), during the whole burst


def app_503s(base_url: str) -> float:
    """The app's own count of 503 answers (Prometheus text on /metrics, summed over workers)."""
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("qa_requests_total{") and 'status="503"' in line
    )


def burst_past_the_queue(
    base_url: str, gates: Path, worker_cpu, count: int, served: int, waiting: int, deadline_s: float = 30.0
) -> BurstRun:
    """`count` blocked requests at once against `served` requests in service and `waiting` more
    allowed to wait; the gate opens once the refusals are in (bounded by `deadline_s`).
    `worker_cpu()`: {pid: CPU seconds} of the gunicorn workers."""
    barrier = threading.Barrier(count)
    refusals = count - served - waiting

    def one(i: int) -> Outcome:
        barrier.wait(timeout=10)
        return send(base_url, BLOCK, f"burst-{i}", timeout_s=deadline_s)

    app_503s_before = app_503s(base_url)
    cpu_before = sum(worker_cpu().values())
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        wait_for(
            lambda: sum(f.done() for f in futures) >= refusals or time.monotonic() - started > deadline_s,
            deadline_s + 5,
            "the refusals",
        )
        wait_for(lambda: len(received_ids(gates)) >= served, 10, "the served requests to arrive")
        cpu_s = sum(worker_cpu().values()) - cpu_before
        refused = [f.result() for f in futures if f.done()]
        ping = Outcome("ping", time.monotonic())
        try:
            with urllib.request.urlopen(f"{base_url}/ping", timeout=5) as resp:
                ping.status, ping.body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            ping.status, ping.body = exc.code, exc.read()
        except OSError as exc:
            ping.error = f"{type(exc).__name__}: {exc}"
        ping.ended = time.monotonic()
        seen = received_ids(gates)
        (gates / "release-requests").touch()
        done, pending = concurrent.futures.wait(
            futures, timeout=max(1.0, started + deadline_s - time.monotonic())
        )
        assert not pending, f"{len(pending)} burst requests still unanswered after {deadline_s} s"
        outcomes = [f.result() for f in futures]
    return BurstRun(
        seen,
        refused,
        ping,
        outcomes,
        max(o.ended for o in outcomes) - started,
        cpu_s,
        app_503s(base_url) - app_503s_before,
    )


def check_burst_run(run: BurstRun, count: int, served: int, waiting: int) -> None:
    """What a burst past the queue must look like, on the host stack and in the image."""
    assert len(run.served) == served, run.served
    assert len(run.refused) == count - served - waiting, [o.describe() for o in run.refused][:5]
    for outcome in run.refused:
        problem = error_shape_problem(outcome, 503)
        assert problem is None, problem
        assert outcome.headers.get("retry-after") == "1", outcome.describe()
        assert "QA_MAX_WAITING_REQUESTS" in outcome.json()["message"], outcome.describe()
        assert outcome.seconds < 2.0, outcome.describe()
    # Refused by nginx: not one reached Python, so the model's CPU never paid for them.
    assert run.app_503s == 0, f"the app answered {run.app_503s} of the refusals"
    assert run.ping.status == 200 and run.ping.seconds < 2.0, run.ping.describe()
    answered = [o for o in run.outcomes if o.status == 200]
    assert len(answered) == served + waiting, [o.describe() for o in run.outcomes if o.status != 503][:5]
    for outcome in answered:
        assert outcome.json()["answer"] == "done", outcome.describe()
    assert run.seconds < 30


@dataclasses.dataclass
class BudgetSpentRun:
    held: Outcome  # held in the user code past its budget
    waiting: list[Outcome]  # queued behind it
    seen: set[str]  # request ids that reached the user code before the gate opened
    after: Outcome  # a quick request once the gate opened


def budget_spent_while_waiting(base_url: str, gates: Path, waiting: int) -> BudgetSpentRun:
    """A blocked request on a worker that serves one at a time, `waiting` quick ones queued
    behind it; the gate opens once they are all answered."""
    with concurrent.futures.ThreadPoolExecutor(waiting + 1) as pool:
        held = pool.submit(send, base_url, BLOCK, "held", timeout_s=30)
        wait_for(lambda: "held" in received_ids(gates), 10, "the held request to reach the user code")
        queued = [pool.submit(send, base_url, QUICK, f"waiting-{i}", timeout_s=30) for i in range(waiting)]
        concurrent.futures.wait([held, *queued], timeout=30)
        seen = received_ids(gates)
        (gates / "release-requests").touch()
        run = BudgetSpentRun(held.result(), [f.result() for f in queued], seen, Outcome("after", 0.0))
    wait_for(lambda: send(base_url, QUICK, "after").status == 200, 10, "the worker to serve again")
    run.after = send(base_url, QUICK, "after-2")
    return run


def check_budget_spent_run(run: BudgetSpentRun, waiting: int) -> None:
    problem = error_shape_problem(run.held, 504)
    assert problem is None, problem
    assert len(run.waiting) == waiting
    for outcome in run.waiting:
        problem = error_shape_problem(outcome, 503)
        assert problem is None, problem
        assert outcome.headers.get("retry-after") == "1", outcome.describe()
        assert "waited" in outcome.json()["message"], outcome.describe()
    assert run.seen == {"held"}, f"dropped requests reached the user code: {run.seen - {'held'}}"
    assert run.after.status == 200, run.after.describe()


@dataclasses.dataclass
class SlowClientsRun:
    baseline: list[Outcome]  # normal requests before the slow clients
    normal: list[Outcome]  # normal requests while the slow clients trickle
    slow: list[Outcome]


def slow_clients_and_normal_requests(
    base_url: str, body: bytes, slow: int = 50, over_s: float = 4.0, normal_clients: int = 2
) -> SlowClientsRun:
    """`slow` connections trickling their request (half the headers, half the body) over
    `over_s` on average, while `normal_clients` closed-loop clients send ordinary requests. Their
    trickles last from half to one and a half times `over_s`, so that they end spread out, as slow
    clients do: all 50 ending in the same few milliseconds would be a burst past the workers'
    threads (2 x 16) at once, the rest waiting their turn."""
    baseline = [send(base_url, body, f"baseline-{i}", timeout_s=30) for i in range(20)]
    with concurrent.futures.ThreadPoolExecutor(slow) as pool:
        slow_futures = [
            pool.submit(
                slow_request,
                base_url,
                body,
                f"slow-{i}",
                ("headers", "body")[i % 2],
                over_s * (0.5 + i / slow),
            )
            for i in range(slow)
        ]
        time.sleep(0.5)  # every slow connection open and trickling
        with LoadLoop(base_url, body, normal_clients, name="normal", max_s=over_s + 10) as load:
            time.sleep(max(0.5, over_s - 1.0))
            normal = load.stop()
        slow_outcomes = [f.result(timeout=60) for f in slow_futures]
    return SlowClientsRun(baseline, normal, slow_outcomes)


def sort_kill_run(run: KillRun, canary) -> tuple[collections.Counter, list[str]]:
    """Each outcome of kill_worker_under_load into one kind, and what no kind admits:

    - "200": the canary's answer;
    - "502": nginx's JSON 502, for a request sent before the kill (in flight on the victim);
    - "503": the loading replacement's 503 with Retry-After, for a request answered after the kill
      (also one sent just before it that no worker had accepted yet: it waited in gunicorn's
      listen queue and the replacement took it).
    """
    kinds: collections.Counter = collections.Counter()
    problems = []
    for o in run.outcomes:
        before = o.started < run.killed_at
        if o.status == 200:
            if o.json() == canary:
                kinds["200"] += 1
                continue
            problems.append(f"a changed answer: {o.describe()}")
        elif o.status == 502 and before and error_shape_problem(o, 502) is None:
            kinds["502"] += 1
        elif o.status == 503 and o.ended > run.kill_sent_at and error_shape_problem(o, 503) is None:
            if "still loading" in o.json()["message"]:
                kinds["503"] += 1
            else:
                problems.append(f"a 503 that is not the loading one: {o.describe()}")
        else:
            when = "before" if before else "after"
            problems.append(f"sent {o.started - run.killed_at:+.3f} s {when} the kill: {o.describe()}")
    return kinds, problems


def fmt_s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


# ---- the fault tests' bounds and checks, the same on the host stack and on the image ----

# Bounds (2 shared CPUs, other test runs may be going on):
RESPAWN_READY_S = 30.0  # a replacement worker imports torch and loads the tiny model: ~3-8 s here
FIRST_200_WITH_A_SURVIVOR_S = 5.0  # the other worker keeps serving: the next request is a 200
# nginx buffers a whole request before it proxies it, so slow clients cost it a connection each and
# the app nothing; a tiny-model request takes ~20 ms: 2 s is 100x that, for a busy shared machine.
NORMAL_P99_S = 2.0
CLOSED_ON_SHUTDOWN = ("ConnectionRefusedError", "ConnectionResetError", "RemoteDisconnected")


def check_sigterm_run(run, logs: str) -> None:
    before = [o for o in run.load if o.started < run.signal_sent_at]
    after = [o for o in run.load if o.started > run.signalled_at + run.drain_started_s + 0.5]
    print(
        f"\nSIGTERM under load: {len(run.load)} quick requests, {len(before)} before the signal, "
        f"{len(after)} once the drain had begun; exit {run.exit_code} after {run.exit_s:.1f} s"
    )
    for outcome in run.held:
        assert outcome.status == 200 and outcome.json()["answer"] == "done", outcome.describe()
    for outcome in before:
        assert outcome.status == 200, f"sent before the signal: {outcome.describe()}"
    for outcome in run.load:
        if outcome.error is not None:
            # Sent after the signal: refused once nginx closed its listener; one that raced with
            # the close (accepted, its request not read yet) is reset instead. No answer either way.
            assert outcome.error.startswith(CLOSED_ON_SHUTDOWN), outcome.describe()
        else:
            assert outcome.status == 200, outcome.describe()
    assert len(before) >= 10, "too little load before the signal"
    assert after, "no request was sent once the drain had begun"
    for outcome in after:
        assert outcome.error and "ConnectionRefusedError" in outcome.error, outcome.describe()
    assert run.exit_code == 0, logs[-3000:]
    assert run.exit_s < 30
    assert "stopped cleanly" in logs
