"""Closed-loop HTTP load against one server on 127.0.0.1, and the answer pass for the compare step.

Closed loop: each of `concurrency` clients sends its next request as soon as the previous one
has answered (after an error, once the answer's Retry-After has passed), over one keep-alive
connection. The requests are taken in a fixed order from one shared counter, so every server sees
the same sequence. A level is bounded twice: a warm-up that is not counted, then a measured window
of `duration` seconds or `max_requests` answers, whichever ends first; what ended inside the window
is counted. Every loop ends by itself.
"""

from __future__ import annotations

import http.client
import itertools
import json
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
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        # nearest-rank percentile: the value below which q% of the answered requests fall
        rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
        return ordered[rank - 1]

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


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Client:
    """One keep-alive connection; reconnects after any failure."""

    def __init__(self, port: int, path: str = "/invocations"):
        self.port, self.path = port, path
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes) -> tuple[int, bytes, str]:
        """(status, body, Retry-After or "")."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            self.conn.request(
                "POST",
                self.path,
                body=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data, resp.getheader("Retry-After", "").strip()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def ask(client: Client, req: CorpusQuestion) -> tuple[bool, dict | str, float]:
    """Send one request: (True, top answer, 0) on success, else (False, reason, the pause before
    the next request: the answer's Retry-After, at most MAX_RETRY_AFTER_S, else ERROR_BACKOFF_S)."""
    try:
        status, data, retry_after = client.post(json.dumps(req.body()).encode())
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}", ERROR_BACKOFF_S
    if status != 200:
        pause = min(float(retry_after), MAX_RETRY_AFTER_S) if retry_after.isdigit() else ERROR_BACKOFF_S
        return False, f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}", pause
    try:
        answer = json.loads(data)
    except ValueError:
        return False, f"not JSON: {data[:200]!r}", ERROR_BACKOFF_S
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if not isinstance(answer, dict) or "answer" not in answer:
        return False, f"unexpected answer shape: {data[:200]!r}", ERROR_BACKOFF_S
    return True, answer, 0.0


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
    stop = threading.Event()

    def worker() -> None:
        client = Client(port)
        try:
            while not stop.is_set():
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
                            stop.set()
                if not ok:
                    stop.wait(pause)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, t_measure - time.perf_counter()))
    if on_measure_start is not None:
        on_measure_start()
    stop.wait(max(0.0, window["end"] - time.perf_counter()))
    stop.set()
    if on_measure_end is not None:
        on_measure_end()
    for t in threads:  # the requests still in flight end (or time out) before the next level
        t.join(timeout=REQUEST_TIMEOUT_S + 5)
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
