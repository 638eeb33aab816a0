"""Where a request's time goes, counted by the QA library for whoever serves it.

The serving layer sets `current` to a fresh `RequestAccount` before it runs a request through
the hooks; the built-in hooks then fill it in (windows and tokens, the forward passes the
request's windows rode in, decoding), from whichever thread does the work. Without an account
(a script, a test, a user's own hooks) nothing is counted.
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
import time


@dataclasses.dataclass
class RequestAccount:
    items: int = 0
    windows: int = 0
    tokens: int = 0  # unpadded tokens of its windows
    queued_before: int = 0  # windows already waiting in the batcher when this request arrived
    batch_sizes: list[int] = dataclasses.field(default_factory=list)  # windows per pass it rode in
    submitted: float | None = None  # time.monotonic() when its windows entered the batcher
    first_pass: float | None = None
    last_pass_end: float | None = None
    phases: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds, by phase name
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def rode(self, windows_in_pass: int, began: float, ended: float) -> None:
        """One forward pass carried some of this request's windows (called by the batcher's lanes)."""
        with self._lock:
            self.batch_sizes.append(windows_in_pass)
            self.first_pass = began if self.first_pass is None else min(self.first_pass, began)
            self.last_pass_end = ended if self.last_pass_end is None else max(self.last_pass_end, ended)

    def add(self, phase: str, seconds: float) -> None:
        with self._lock:
            self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    @property
    def queue_wait_s(self) -> float | None:
        """From its windows entering the batcher to the first pass that carried one."""
        if self.submitted is None or self.first_pass is None:
            return None
        return self.first_pass - self.submitted

    @property
    def forward_s(self) -> float | None:
        """From the first pass carrying its windows starting to the last one ending."""
        if self.first_pass is None or self.last_pass_end is None:
            return None
        return self.last_pass_end - self.first_pass


current: contextvars.ContextVar[RequestAccount | None] = contextvars.ContextVar("qa_account", default=None)


class timed:
    """`with timed("decode"):` adds the block's duration to the current account's phase."""

    def __init__(self, phase: str):
        self.phase = phase

    def __enter__(self) -> timed:
        self.began = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        account = current.get()
        if account is not None:
            account.add(self.phase, time.perf_counter() - self.began)
