"""Closed-loop HTTP load against one server on 127.0.0.1, and the answer pass for the compare step.

Closed loop (`ClosedLoop`, which the soak and the fault tests drive too): each of `concurrency`
clients sends its next request as soon as the previous one has answered (after an error, once the
answer's Retry-After has passed), over one keep-alive connection. The requests are taken in a fixed order from one shared counter, so every server sees
the same sequence. A level is bounded twice: a warm-up that is not counted, then a measured window
of `duration` seconds or `max_requests` answers, whichever ends first; what ended inside the window
is counted. Every loop ends by itself.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qa.corpus import CorpusQuestion

HOST = "127.0.0.1"  # loopback only: the load never leaves this machine
REQUEST_TIMEOUT_S = 60.0
ERROR_BACKOFF_S = 0.05  # after a failed request, so a dead server is not hammered in a hot loop
# A 503's Retry-After is honoured, as SageMaker's callers and the AWS SDKs' retries wait; capped so
# that a client is not idle for a whole level.
MAX_RETRY_AFTER_S = 1.0


@dataclass
class Sample:
    index: int
    start: float
    end: float
    ok: bool


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    error_examples: list[str] = field(default_factory=list)
    answered: list[int] = field(default_factory=list, repr=False)  # request indices answered, in order

    @property
    def rps(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 3),
            "p50_ms": _r(self.percentile(50)),
            "p95_ms": _r(self.percentile(95)),
            "p99_ms": _r(self.percentile(99)),
            "mean_ms": _r(statistics.fmean(self.latencies_ms) if self.latencies_ms else None),
            "error_examples": self.error_examples[:3],
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the value below which q% of `values` fall (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), math.ceil(q * len(ordered) / 100))) - 1]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Client:
    """One keep-alive connection; reconnects after any failure."""

    def __init__(self, port: int, path: str = "/invocations", timeout_s: float = REQUEST_TIMEOUT_S):
        self.port, self.path, self.timeout_s = port, path, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes, str]:
        """(status, body, Retry-After or "")."""
        status, headers, data = self.request(
            "POST", body, {"Content-Type": "application/json", "Accept": "application/json"}
        )
        return status, data, headers.get("retry-after", "").strip()

    def request(
        self, method: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); raises what the connection raised."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
        try:
            self.conn.request(method, self.path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            got = {k.lower(): v for k, v in resp.getheaders()}
            if got.get("connection", "").lower() == "close":
                self.close()
            return resp.status, got, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def retry_pause_s(retry_after: str) -> float:
    """The pause before a client's next request after a failure: the answer's Retry-After (at most
    MAX_RETRY_AFTER_S), else ERROR_BACKOFF_S."""
    return min(float(retry_after), MAX_RETRY_AFTER_S) if retry_after.isdigit() else ERROR_BACKOFF_S


def ask(client: Client, req: CorpusQuestion) -> tuple[bool, dict | str, float]:
    """Send one request: (True, top answer, 0) on success, else (False, reason, the pause before
    the next request: the answer's Retry-After, at most MAX_RETRY_AFTER_S, else ERROR_BACKOFF_S)."""
    try:
        status, data, retry_after = client.post(json.dumps(req.body()).encode())
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}", ERROR_BACKOFF_S
    if status != 200:
        return False, f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}", retry_pause_s(retry_after)
    try:
        answer = json.loads(data)
    except ValueError:
        return False, f"not JSON: {data[:200]!r}", ERROR_BACKOFF_S
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if not isinstance(answer, dict) or "answer" not in answer:
        return False, f"unexpected answer shape: {data[:200]!r}", ERROR_BACKOFF_S
    return True, answer, 0.0


class ClosedLoop:
    """`clients` threads, each sending its next request as soon as the previous one has answered,
    until stop() or `max_s`: the one load loop of the benchmark, the soak and the fault tests.

    `step(client, index, n)` sends request `n` of client `index` (records what it needs) and
    returns the pause before the next one (0: none; a stop ends the pause). `client` is the
    thread's keep-alive Client to 127.0.0.1:`port`, None without a port (the step then makes its
    own connections). Used as a context manager: started on entry, stopped on exit."""

    def __init__(
        self,
        clients: int,
        step: Callable[[Client | None, int, int], float],
        *,
        port: int | None = None,
        name: str = "load",
        max_s: float = math.inf,
        client_timeout_s: float = REQUEST_TIMEOUT_S,
    ):
        self.step, self.port, self.max_s, self.client_timeout_s = step, port, max_s, client_timeout_s
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(clients)
        ]

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.max_s
        client = Client(self.port, timeout_s=self.client_timeout_s) if self.port is not None else None
        try:
            for n in itertools.count():
                if self.stopping.is_set() or time.monotonic() > deadline:
                    return
                pause = self.step(client, index, n)
                if pause > 0:
                    self.stopping.wait(pause)
        finally:
            if client is not None:
                client.close()

    def start(self) -> ClosedLoop:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self, join_s: float = REQUEST_TIMEOUT_S + 5) -> bool:
        """Stop and wait for the requests in flight; True when every thread has ended."""
        self.stopping.set()
        ends = time.monotonic() + join_s
        for thread in self.threads:
            thread.join(timeout=max(0.0, ends - time.monotonic()))
        return not any(thread.is_alive() for thread in self.threads)

    def __enter__(self) -> ClosedLoop:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_level(
    port: int,
    requests: Sequence[CorpusQuestion],
    concurrency: int,
    duration: float,
    warmup: float,
    max_requests: int | None = None,
    on_measure_start: Callable[[], None] | None = None,
    on_measure_end: Callable[[], None] | None = None,
) -> LevelResult:
    """Closed-loop load at `concurrency`. Counts the requests that ended inside the measured window
    (after `warmup`, for `duration` s or until `max_requests` ended), so throughput is what the
    server completed per second of the window even when a request waits longer than the window
    lasts; `on_measure_start`/`on_measure_end` are called at its edges (for a CPU meter)."""
    counter = itertools.count()
    lock = threading.Lock()
    samples: list[Sample] = []
    errors: list[tuple[float, str]] = []
    t_measure = time.perf_counter() + warmup
    window = {"end": t_measure + duration, "ended": 0}

    def step(client: Client | None, index: int, n: int) -> float:
        assert client is not None
        with lock:
            req = requests[next(counter) % len(requests)]
        start = time.perf_counter()
        ok, answer, pause = ask(client, req)
        end = time.perf_counter()
        with lock:
            samples.append(Sample(req.index, start, end, ok))
            if not ok:
                errors.append((end, str(answer)))
            if max_requests is not None and t_measure <= end < window["end"]:
                window["ended"] += 1
                if window["ended"] >= max_requests:
                    window["end"] = end
                    load.stopping.set()
        return pause

    load = ClosedLoop(concurrency, step, port=port)
    with load:
        time.sleep(max(0.0, t_measure - time.perf_counter()))
        if on_measure_start is not None:
            on_measure_start()
        load.stopping.wait(max(0.0, window["end"] - time.perf_counter()))
        load.stopping.set()
        if on_measure_end is not None:
            on_measure_end()
    # (leaving the block waited for the requests still in flight to end before the next level)
    end = min(window["end"], time.perf_counter())
    measured = [s for s in samples if t_measure <= s.end < end]
    return LevelResult(
        concurrency=concurrency,
        requests=len(measured),
        errors=sum(not s.ok for s in measured),
        seconds=end - t_measure,
        latencies_ms=[(s.end - s.start) * 1000 for s in measured if s.ok],
        error_examples=[text for at, text in errors if t_measure <= at < end][:3],
        answered=[s.index for s in measured if s.ok],
    )


def collect_answers(
    port: int, requests: Sequence[CorpusQuestion], concurrency: int = 4
) -> dict[int, dict | None]:
    """Top answer {answer, start, end, score} for every request (None on failure), for the compare step."""
    counter = itertools.count()
    lock = threading.Lock()
    answers: dict[int, dict | None] = {}

    def worker() -> None:
        client = Client(port)
        try:
            while True:
                with lock:
                    i = next(counter)
                if i >= len(requests):
                    return
                ok, answer, _ = ask(client, requests[i])
                with lock:
                    answers[requests[i].index] = answer if ok else None
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"answers-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=len(requests) * REQUEST_TIMEOUT_S)
    return answers


def first_answer(port: int, req: CorpusQuestion) -> bool:
    """One request for the readiness poll: True once the server answers it correctly."""
    client = Client(port)
    try:
        ok, _, _ = ask(client, req)
        return ok
    finally:
        client.close()


def match_share(
    answers: dict[int, dict | None], reference: dict[int, dict | None]
) -> tuple[float | None, int]:
    """Share of requests (answered by both) whose top answer text and span equal the reference's."""
    keys = [k for k in reference if reference[k] is not None and answers.get(k) is not None]
    if not keys:
        return None, 0
    same = sum(
        all(answers[k].get(f) == reference[k].get(f) for f in ("answer", "start", "end")) for k in keys
    )
    return same / len(keys), len(keys)
