"""bench/loadgen.py's shared pieces: the nearest-rank percentile and the closed load loop that
the benchmark, the soak and the fault tests drive."""

from __future__ import annotations

import threading
import time

from bench.loadgen import ClosedLoop, percentile, retry_pause_s


def test_the_percentile_is_the_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [percentile(values, q) for q in (1, 20, 50, 60, 99, 100)] == [1.0, 1.0, 3.0, 3.0, 5.0, 5.0]
    assert percentile([], 50) is None


def test_a_failed_request_waits_for_retry_after_up_to_a_second_else_briefly():
    assert retry_pause_s("1") == 1.0 and retry_pause_s("30") == 1.0
    assert retry_pause_s("") == retry_pause_s("soon") == 0.05


def test_each_client_sends_its_requests_in_turn_until_stopped():
    seen: dict[int, list[int]] = {}
    lock = threading.Lock()

    def step(client, index: int, n: int) -> float:
        assert client is None  # no port: the step makes its own connections
        with lock:
            seen.setdefault(index, []).append(n)
        time.sleep(0.005)
        return 0.0

    with ClosedLoop(3, step, name="t"):
        time.sleep(0.2)
    counts = {index: len(ns) for index, ns in seen.items()}
    time.sleep(0.05)
    assert sorted(seen) == [0, 1, 2]
    assert all(ns == list(range(len(ns))) and len(ns) > 3 for ns in seen.values())
    assert counts == {index: len(ns) for index, ns in seen.items()}, "a client went on after stop()"


def test_the_loop_ends_by_itself_after_max_s_and_a_pause_ends_with_a_stop():
    loop = ClosedLoop(2, lambda client, index, n: 0.0 if time.sleep(0.01) else 0.0, max_s=0.1).start()
    time.sleep(0.3)
    assert not any(t.is_alive() for t in loop.threads)
    pausing = ClosedLoop(1, lambda client, index, n: 30.0).start()
    started = time.monotonic()
    assert pausing.stop(join_s=5) and time.monotonic() - started < 2
