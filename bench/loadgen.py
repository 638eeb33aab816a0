"""Closed-loop HTTP load against one server on 127.0.0.1, and the answer pass for the compare step.

Closed loop: each of `concurrency` clients sends its next request as soon as the previous one
has answered, over one keep-alive connection. The requests are taken in a fixed order from one
shared counter, so every server sees the same sequence. A level is bounded twice: a warm-up
that is not counted, then a measured window of `duration` seconds or `max_requests`,
whichever ends first. Every loop ends by itself.
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

from qa.corpus import QARequest

HOST = "127.0.0.1"  # loopback only: the load never leaves this machine
REQUEST_TIMEOUT_S = 60.0
ERROR_BACKOFF_S = 0.05  # after a failed request, so a dead server is not hammered in a hot loop


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

    def post(self, body: bytes) -> tuple[int, bytes]:
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
            return resp.status, data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def ask(client: Client, req: QARequest) -> tuple[bool, dict | str]:
    """Send one request; (True, top answer) on success, (False, reason) otherwise."""
    try:
        status, data = client.post(json.dumps(req.body()).encode())
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if status != 200:
        return False, f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}"
    try:
        answer = json.loads(data)
    except ValueError:
        return False, f"not JSON: {data[:200]!r}"
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if not isinstance(answer, dict) or "answer" not in answer:
        return False, f"unexpected answer shape: {data[:200]!r}"
    return True, answer


def run_level(
    port: int,
    requests: Sequence[QARequest],
    concurrency: int,
    duration: float,
    warmup: float,
    max_requests: int | None = None,
    on_measure_start: Callable[[], None] | None = None,
) -> LevelResult:
    """Closed-loop load at `concurrency`; returns the measured window only."""
    counter = itertools.count()
    lock = threading.Lock()
    samples: list[Sample] = []
    errors: list[str] = []
    measured = itertools.count()  # requests issued inside the measured window
    t_begin = time.perf_counter()
    t_measure = t_begin + warmup
    t_stop = t_measure + duration
    measure_started = threading.Event()

    def mark_measure_start() -> None:
        with lock:
            if not measure_started.is_set():
                if on_measure_start is not None:
                    on_measure_start()
                measure_started.set()

    def worker() -> None:
        client = Client(port)
        try:
            while True:
                now = time.perf_counter()
                if now >= t_stop:
                    return
                in_window = now >= t_measure
                if in_window:
                    mark_measure_start()
                    if max_requests is not None and next(measured) >= max_requests:
                        return
                with lock:
                    req = requests[next(counter) % len(requests)]
                start = time.perf_counter()
                ok, answer = ask(client, req)
                end = time.perf_counter()
                if in_window:
                    with lock:
                        samples.append(Sample(req.index, start, end, ok))
                        if not ok:
                            errors.append(str(answer))
                if not ok:
                    time.sleep(ERROR_BACKOFF_S)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup + duration + 2 * REQUEST_TIMEOUT_S)
    window_start = min((s.start for s in samples), default=t_measure)
    window_end = max((s.end for s in samples), default=window_start)
    return LevelResult(
        concurrency=concurrency,
        requests=len(samples),
        errors=sum(not s.ok for s in samples),
        seconds=window_end - window_start,
        latencies_ms=[(s.end - s.start) * 1000 for s in samples if s.ok],
        error_examples=errors[:3],
        answered=[s.index for s in samples if s.ok],
    )


def collect_answers(port: int, requests: Sequence[QARequest], concurrency: int = 4) -> dict[int, dict | None]:
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
                ok, answer = ask(client, requests[i])
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


def first_answer(port: int, req: QARequest) -> bool:
    """One request for the readiness poll: True once the server answers it correctly."""
    client = Client(port)
    try:
        ok, _ = ask(client, req)
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
