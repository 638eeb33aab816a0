"""The per-worker dynamic batcher (qa/batcher.py) with a fake forward pass.

The fake model's logits for a token depend only on that window's tokens, as a real model's do
under its attention mask, so batched and one-by-one results must be bit-identical.
"""

from __future__ import annotations

import random
import threading
import time
import types

import numpy as np
import pytest

from qa.batcher import Batcher
from qa.errors import DeadlineExceeded
from serving.errors import error_response


def window(length: int, seed: int):
    rng = random.Random(seed)
    return types.SimpleNamespace(input_ids=[rng.randrange(1, 1000) for _ in range(length)])


class FakeModel:
    """Pads like the real model; records batches; can be held inside a forward pass."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with: BaseException | None = None
        self.alone: list[bool] = []

    def __call__(self, windows, alone=False):
        self.alone.append(alone)
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([len(w.input_ids) for w in windows])
        if self.fail_with is not None:
            raise self.fail_with
        width = max(len(w.input_ids) for w in windows)
        start = np.full((len(windows), width), -1e4, dtype=np.float32)
        end = np.full((len(windows), width), -1e4, dtype=np.float32)
        for row, w in enumerate(windows):
            ids = np.array(w.input_ids, dtype=np.float32)
            start[row, : len(ids)] = np.cumsum(ids) / 997.0
            end[row, : len(ids)] = ids[::-1] / 13.0
        return start, end


def make(model, **overrides) -> Batcher:
    options = {
        "max_windows": 8,
        "max_tokens": 400,
        "max_wait_s": 0.005,
        "max_padding": 1.0,
    }
    options.update(overrides)
    return Batcher(model, **options)


def hold(batcher: Batcher, model: FakeModel) -> threading.Thread:
    """Occupy the batcher's thread inside a forward pass until model.gate is set."""
    model.gate.clear()
    model.entered.clear()
    thread = threading.Thread(target=batcher.submit, args=([window(4, -1)],))
    thread.start()
    assert model.entered.wait(5)
    return thread


@pytest.mark.parametrize("parallel", [1, 2, 3])
def test_concurrent_submissions_equal_one_by_one(parallel):
    model = FakeModel()
    rng = random.Random(7)
    requests = [
        [window(rng.randrange(5, 60), 100 * r + i) for i in range(rng.randrange(1, 5))] for r in range(40)
    ]
    # Room for every window at once: this test is about equal results, not back-pressure (a queue
    # of 64 refused some of these ~100 windows when the threads happened to submit together).
    batcher = make(model, parallel=parallel)
    results: dict[int, list] = {}

    def client(index: int) -> None:
        results[index] = batcher.submit(requests[index])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    serial = FakeModel()
    for index, windows in enumerate(requests):
        got = results[index]
        assert len(got) == len(windows)
        for w, (start, end) in zip(windows, got):
            want_start, want_end = serial([w])
            assert start.dtype == np.float32 and start.shape == (len(w.input_ids),)
            np.testing.assert_array_equal(start, want_start[0])
            np.testing.assert_array_equal(end, want_end[0])
    assert max(len(b) for b in model.batches) > 1, "nothing was batched"
    for lengths in model.batches:
        assert len(lengths) <= 8
        assert len(lengths) == 1 or len(lengths) * max(lengths) <= 400


def test_lanes_run_forward_passes_at_the_same_time():
    inside = threading.Barrier(2, timeout=5)

    class Overlapping(FakeModel):
        def __call__(self, windows, alone=False):
            inside.wait()  # breaks (BrokenBarrierError) unless two passes are in here at once
            return super().__call__(windows, alone)

    model = Overlapping()
    batcher = make(model, parallel=2, max_padding=0.0)
    # A window of 10 and one of 20 may not share a pass (padding): two passes, one per lane.
    got = batcher.submit([window(10, 1), window(20, 2)])
    assert [len(start) for start, _ in got] == [10, 20]
    assert sorted(map(tuple, model.batches)) == [(10,), (20,)]
    assert not inside.broken


def overlap(batcher: Batcher, model: FakeModel, passes_seen: int) -> None:
    """A pass held inside the model while a second request comes: the two overlap."""
    held = hold(batcher, model)
    second = threading.Thread(target=batcher.submit, args=([window(12, 2)],))
    second.start()
    deadline = time.monotonic() + 5
    while len(model.alone) < passes_seen and time.monotonic() < deadline:
        time.sleep(0.01)
    model.gate.set()
    held.join(5)
    second.join(5)


def test_a_pass_is_alone_only_when_no_other_pass_runs_or_waits():
    """What the adaptive plan rests on (qa/backends.py): a lone pass may take all the threads."""
    model = FakeModel()
    batcher = make(model, parallel=2, max_wait_s=0)
    batcher.submit([window(10, 1)])
    overlap(batcher, model, passes_seen=3)  # the held pass started alone; the second did not
    assert model.alone == [True, True, False]


def test_one_request_after_another_runs_alone():
    """Concurrency 1: both lanes wake for each request and one takes it; the other, finding the
    queue empty, has seen no overlap."""

    class Slow(FakeModel):  # the other lane gives up waiting for company while this pass runs
        def __call__(self, windows, alone=False):
            time.sleep(0.02)
            return super().__call__(windows, alone)

    model = Slow()
    batcher = make(model, parallel=2, max_wait_s=0.005)
    for i in range(20):
        batcher.submit([window(10 + i, i)])
    assert model.alone == [True] * 20


def test_a_pass_is_alone_again_only_after_a_calm_spell():
    """Under steady load the queue empties for moments: a pass then stays on a stream's share
    rather than take all the threads and hold up the arrivals the other stream could run."""
    model = FakeModel()
    batcher = make(model, parallel=2, max_wait_s=0, calm_s=0.3)
    overlap(batcher, model, passes_seen=2)
    batcher.submit([window(10, 3)])  # right after the overlap: not alone
    time.sleep(0.4)
    batcher.submit([window(10, 4)])  # after a calm spell: alone
    assert model.alone == [True, False, False, True]


@pytest.mark.parametrize("length,overlap", [(40, True), (60, False)])
def test_lanes_share_one_token_budget(length, overlap):
    """Two passes of 40 padded tokens fit a budget of 100 at once; two of 60 do not."""

    class Counting(FakeModel):
        inside = most = 0
        lock = threading.Lock()

        def __call__(self, windows, alone=False):
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            time.sleep(0.05)
            try:
                return super().__call__(windows, alone)
            finally:
                with self.lock:
                    self.inside -= 1

    model = Counting()
    batcher = make(model, parallel=2, max_tokens=100, max_padding=0.0, max_wait_s=0)
    threads = [threading.Thread(target=batcher.submit, args=([window(length + i, i)],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(len(b) for b in model.batches) == 6
    assert model.most == (2 if overlap else 1)


def test_windows_of_similar_length_go_together():
    model = FakeModel()
    batcher = make(model, max_tokens=220, max_wait_s=0)
    blocker = hold(batcher, model)
    lengths = [10, 100, 12, 98, 11]
    threads = [threading.Thread(target=batcher.submit, args=([window(n, n)],)) for n in lengths]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(batcher._queue) < len(lengths) and time.monotonic() < deadline:
        time.sleep(0.001)
    model.gate.set()
    for t in [blocker, *threads]:
        t.join(5)
    assert sorted(map(sorted, model.batches[1:])) == [[10, 11, 12], [98, 100]]


@pytest.mark.parametrize(
    "max_padding,want",
    [
        # [100, 104, 110]: 330 padded positions for 314 tokens, 4.8% padding
        (0.05, [[100, 104, 110], [150], [200]]),
        # [100, 104, 110, 150] would be 600 for 464 (22.7%); [150, 200] is 400 for 350 (12.5%)
        (0.2, [[100, 104, 110], [150, 200]]),
        (0.25, [[100, 104, 110, 150], [200]]),
        (0.0, [[100], [104], [110], [150], [200]]),
    ],
)
def test_a_batch_pads_at_most_its_share(max_padding, want):
    model = FakeModel()
    batcher = make(model, max_wait_s=0, max_tokens=10**6, max_padding=max_padding)
    lengths = [150, 100, 200, 110, 104]
    got = batcher.submit([window(n, n) for n in lengths])
    assert [len(start) for start, _ in got] == lengths
    assert model.batches == want


def test_deadline_while_queued_is_a_504_and_drops_the_windows():
    model = FakeModel()
    batcher = make(model)
    blocker = hold(batcher, model)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        batcher.submit([window(5, 1), window(7, 2)], deadline=time.monotonic() + 0.1)
    assert 0.09 < time.monotonic() - began < 5.0  # at its deadline, not once the held pass ends
    assert error_response(caught.value)[0] == 504
    assert batcher._queue == []
    model.gate.set()
    blocker.join(5)
    assert [5, 7] not in model.batches and [7, 5] not in model.batches


def test_without_a_deadline_a_request_waits_out_a_long_pass():
    """A library call has no time budget (the serving runtime gives each request its own)."""
    model = FakeModel()
    batcher = make(model)
    blocker = hold(batcher, model)
    release = threading.Timer(0.3, model.gate.set)
    release.start()
    began = time.monotonic()
    assert len(batcher.submit([window(5, 1)])) == 1
    assert time.monotonic() - began >= 0.25
    blocker.join(5)


def test_a_request_that_times_out_while_the_batch_waits_for_company_leaves_the_thread_working():
    batcher = make(FakeModel(), max_wait_s=0.2)
    with pytest.raises(DeadlineExceeded):
        batcher.submit([window(5, 1)], deadline=time.monotonic() + 0.05)
    time.sleep(0.3)  # the thread wakes from its wait to an empty queue
    assert all(t.is_alive() for t in batcher._threads)
    assert len(batcher.submit([window(5, 2)])) == 1


def test_forward_errors_reach_every_request_of_the_batch():
    model = FakeModel()
    model.fail_with = RuntimeError("boom")
    batcher = make(model)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit([window(5, 1)])
    model.fail_with = None
    assert len(batcher.submit([window(5, 1)])) == 1  # the thread survives


def test_no_thread_until_first_use():
    batcher = make(FakeModel())
    assert batcher._threads == []
    assert batcher.submit([]) == []


def test_a_request_alone_is_cut_shortest_first_within_its_own_cap():
    model = FakeModel()
    batcher = make(model, max_wait_s=0, max_tokens=10**6)
    lengths = [30, 5, 17, 9, 40, 12, 22]
    got = batcher.submit([window(n, n) for n in lengths], max_windows=3)
    assert [len(start) for start, _ in got] == lengths
    assert model.batches == [[5, 9, 12], [17, 22, 30], [40]]


def test_fixed_widths_batch_only_windows_of_one_width():
    """width_step (reduced precisions): windows batch only with windows padded to the same
    multiple, whatever padding budget would allow; results are still each window's own."""
    model = FakeModel()
    batcher = make(model, width_step=16, max_width=40, max_wait_s=0.05)
    lengths = [20, 30, 33, 38, 47]  # widths 32, 32, 40 (cut to max_width), 40, 47 (its own length)
    windows = [window(n, seed=n) for n in lengths]
    got = batcher.submit(windows)
    assert sorted(map(sorted, model.batches)) == [[20, 30], [33, 38], [47]]
    alone = FakeModel()
    want = make(alone).submit(windows)
    for (gs, ge), (ws, we) in zip(got, want):
        assert (gs == ws).all() and (ge == we).all()
