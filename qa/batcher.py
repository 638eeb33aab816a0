"""Dynamic batching in one worker: windows of concurrent requests share forward passes.

Request threads `submit` their windows and block; `parallel` background threads (lanes) run the
forward passes, each one batch at a time. A lane takes the oldest queued window, waits up to
`max_wait_s` for company while the batch has room, and adds the queued windows closest to it in
length within three bounds: `max_windows` (or a request's own lower cap); `max_tokens`, padded
tokens (windows x longest length) counted over all the passes running at once in this worker; and
`max_padding`, the share of the batch's tokens that are padding (padded positions cost as much as
real ones, so a batch that pads more than batching saves is slower than its windows one by one).
It runs one forward pass and hands each window its own logits, cut back to its own length:
batching never changes what a window sees. A request's windows queue shortest first, so a request
alone is cut into batches of neighbouring lengths. With `width_step` > 1 (reduced precisions, whose
logits shift with the width a window is padded to) every window counts, and is padded, as its
length rounded up to a multiple of it, and a batch holds windows of one such width only.

Two lanes keep both cores of a small instance busy when batches are small: one lane's forward pass
leaves a core idle between operators and while Python handles the results (measured: 1.2 of 2
CPUs busy at concurrency 4 with one lane). Big batches do not run side by side: the token budget
is shared.

The queue holds the windows of the requests the worker serves at once (serving/gunicorn_worker.py
bounds them). A request still waiting at its deadline (the caller's: the serving runtime's time
budget; none for a library call) fails with DeadlineExceeded, and its queued windows are dropped.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from qa import accounting
from qa.errors import DeadlineExceeded

Logits = tuple[np.ndarray, np.ndarray]
# A pass counts as alone only this long after passes last overlapped (see _run).
CALM_S = 0.1


class _Job:
    """One request's windows and, as they come back, their logits."""

    def __init__(self, count: int, deadline: float):
        self.account = accounting.current.get()  # the submitting request's, read by the lanes
        self.results: list[Logits | None] = [None] * count
        self.remaining = count
        self.deadline = deadline
        self.error: BaseException | None = None
        self.done = threading.Event()

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _Entry:
    __slots__ = ("job", "index", "window", "length", "width", "queued", "cap")

    def __init__(self, job: _Job, index: int, window, queued: float, cap: int, width: int):
        self.job, self.index, self.window, self.queued, self.cap = job, index, window, queued, cap
        self.length = len(window.input_ids)
        self.width = width  # what it costs in a pass: its length, or its fixed padded width


def padded_width(length: int, step: int, cap: int | None = None) -> int:
    """`length` rounded up to a multiple of `step` (1: unchanged), never above `cap`."""
    width = -(-length // step) * step
    return width if cap is None else min(width, max(cap, length))


class Batcher:
    def __init__(
        self,
        forward: Callable[[list, bool], Logits],
        *,
        max_windows: int,
        max_tokens: int,
        max_wait_s: float,
        max_padding: float,
        parallel: int = 1,
        width_step: int = 1,
        max_width: int | None = None,
        calm_s: float = CALM_S,
    ):
        self.forward = forward  # (windows, alone) -> (start, end) padded, each (batch, width)
        self.max_windows, self.max_tokens, self.max_wait_s = max_windows, max_tokens, max_wait_s
        self.max_padding = max_padding
        self._cond = threading.Condition()
        self._queue: list[_Entry] = []  # in arrival order
        self.parallel = parallel
        # width_step > 1: every window is padded to a multiple of it, and batches hold one width only.
        self.width_step, self.max_width = width_step, max_width
        self._tokens_in_flight = 0  # padded tokens of the passes running now, across lanes
        self.calm_s = calm_s
        self._overlapped_at = -math.inf  # when a pass last started beside others or with windows waiting
        self._threads: list[threading.Thread] = []
        self._pid: int | None = None

    def submit(
        self, windows: Sequence, deadline: float | None = None, max_windows: int | None = None
    ) -> list[Logits]:
        """(start, end) float32 logits per window, unpadded, in the order given; at most
        `max_windows` rows in any forward pass that holds one of these windows. `deadline`
        (time.monotonic(); None: no limit) is when to give up waiting."""
        if not windows:
            return []
        now = time.monotonic()
        job = _Job(len(windows), math.inf if deadline is None else deadline)
        with self._cond:
            self._ensure_threads()
            if job.account is not None:
                job.account.submitted, job.account.queued_before = now, len(self._queue)
            cap = min(self.max_windows, max_windows or self.max_windows)
            order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
            self._queue.extend(
                _Entry(
                    job,
                    i,
                    windows[i],
                    now,
                    cap,
                    padded_width(len(windows[i].input_ids), self.width_step, self.max_width),
                )
                for i in order
            )
            self._cond.notify()
        if not job.done.wait(None if deadline is None else max(deadline - time.monotonic(), 0.0)):
            with self._cond:  # drop what is still queued; a running batch finishes regardless
                self._queue = [e for e in self._queue if e.job is not job]
            job.fail(DeadlineExceeded("the request did not reach the model within its time budget"))
        if job.error is not None:
            raise job.error
        return job.results  # type: ignore[return-value]  # every slot is filled once done is set

    def _ensure_threads(self) -> None:
        # Started on first use, again in a forked worker (threads do not survive fork), and again
        # should one ever have died.
        if self._pid != os.getpid():
            self._threads, self._pid = [], os.getpid()
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.parallel:
            thread = threading.Thread(target=self._run, name=f"qa-batcher-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._queue and self._fits(self._queue[0])):
                    self._cond.wait()
                # (A request that times out meanwhile takes its windows away: the queue may empty.)
                while (
                    self._queue
                    and not self._full()
                    and (wait := self._queue[0].queued + self.max_wait_s - time.monotonic()) > 0
                ):
                    self._cond.wait(wait)
                batch = self._take(self.max_tokens - self._tokens_in_flight)
                # Nothing else running or waiting, nor lately: the backend may give this pass all
                # its threads. Under steady load the queue still empties for a moment now and then;
                # a pass on all the threads then holds up the next arrivals, which the streams
                # would have run beside it at less CPU per window.
                now = time.monotonic()
                if batch and (self._tokens_in_flight or self._queue):
                    self._overlapped_at = now
                alone = now - self._overlapped_at > self.calm_s
                padded = len(batch) * max((e.width for e in batch), default=0)
                self._tokens_in_flight += padded
            if batch:
                try:
                    self._run_batch(batch, alone)
                finally:
                    with self._cond:
                        self._tokens_in_flight -= padded
                        self._cond.notify_all()

    def _fits(self, entry: _Entry) -> bool:
        # A pass may start beside running ones only within the token budget they leave: two small
        # passes at once fill the idle gaps of small matrix products, two big ones only contend
        # (at concurrency 16, two lanes of full batches ran 15% slower than one).
        return self._tokens_in_flight == 0 or entry.width <= self.max_tokens - self._tokens_in_flight

    def _full(self) -> bool:
        longest = max(e.width for e in self._queue)
        return len(self._queue) >= self.max_windows or len(self._queue) * longest >= self.max_tokens

    def _take(self, budget: int) -> list[_Entry]:
        """The oldest live window and its nearest neighbours in length, within the budgets (`budget`:
        padded tokens; the oldest window goes alone if it is longer)."""
        now = time.monotonic()
        for entry in self._queue:
            if entry.job.deadline <= now:
                entry.job.fail(DeadlineExceeded("the request did not reach the model within its time budget"))
        self._queue = [e for e in self._queue if not e.job.done.is_set()]
        if not self._queue or not self._fits(self._queue[0]):  # (other lanes started meanwhile)
            return []
        ranked = sorted(self._queue, key=lambda e: e.width)
        low = high = ranked.index(self._queue[0])
        longest, cap, tokens = ranked[low].width, ranked[low].cap, ranked[low].width
        while high - low + 1 < cap:
            below = ranked[low - 1] if low > 0 else None
            above = ranked[high + 1] if high + 1 < len(ranked) else None
            nearest = min(
                (e for e in (below, above) if e is not None),
                key=lambda e: abs(e.width - longest),
                default=None,
            )
            if nearest is None or high - low + 2 > nearest.cap:
                break
            if self.width_step > 1 and nearest.width != longest:
                break  # fixed widths: another width would change what this window's logits are
            # The farther neighbour would pad more still: stop at the first that does not fit.
            padded = (high - low + 2) * max(longest, nearest.width)
            if padded > budget or padded - tokens - nearest.width > self.max_padding * padded:
                break
            longest, cap = max(longest, nearest.width), min(cap, nearest.cap)
            tokens += nearest.width
            low, high = (low - 1, high) if nearest is below else (low, high + 1)
        batch = ranked[low : high + 1]
        taken = {id(e) for e in batch}
        self._queue = [e for e in self._queue if id(e) not in taken]
        return batch

    def _run_batch(self, batch: list[_Entry], alone: bool) -> None:
        began = time.monotonic()
        try:
            start, end = self.forward([e.window for e in batch], alone)
        except BaseException as exc:  # every request in the batch sees the failure
            for entry in batch:
                entry.job.fail(exc)
            return
        ended = time.monotonic()
        for job in {id(e.job): e.job for e in batch}.values():
            if job.account is not None:
                job.account.rode(len(batch), began, ended)
        rows = [(start[row, : e.length].copy(), end[row, : e.length].copy()) for row, e in enumerate(batch)]
        with self._cond:  # lanes may finish windows of the same request at once
            for entry, logits in zip(batch, rows):
                job = entry.job
                job.results[entry.index] = logits
                job.remaining -= 1
                if job.remaining == 0 and not job.done.is_set():
                    job.done.set()
