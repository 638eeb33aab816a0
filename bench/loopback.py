"""Loopback plumbing the benchmark and the tests share: a free port on 127.0.0.1, and the poll
that waits for a server started on it to be ready.

    port = free_port()                      # the kernel's choice
    port = free_port(between=(20000, 32000))  # a random free one in that range
    seconds = wait_until_ready(probe, timeout_s, alive=proc_is_running)

What "ready" means stays with the caller (`probe`: a 200 on /ping, a first correct answer, any
answer at all), and so does the wording of its failure: catch ServerDied and NotReady.
Standard library only: the tests and the benchmark import it alike.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

HOST = "127.0.0.1"
POLL_S = 0.2


def free_port(between: tuple[int, int] | None = None) -> int:
    """A TCP port free on 127.0.0.1 now: the kernel's choice, or with `between=(low, high)` a
    random one with low <= port < high (MMS rejects ports above 32767, "Invalid port number",
    and the kernel picks from 32768 up)."""
    if between is None:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            return sock.getsockname()[1]
    low, high = between
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


class ServerDied(RuntimeError):
    """The server exited before it was ready."""


class NotReady(TimeoutError):
    """The server was still not ready when the time ran out."""


def wait_until_ready(
    probe: Callable[[], bool],
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    interval_s: float = POLL_S,
) -> float:
    """Call `probe()` every `interval_s` until it returns true; returns the seconds waited.

    Raises ServerDied as soon as `alive()` is false (checked before each probe), NotReady once a
    probe fails more than `timeout_s` after the call. `probe` handles its own expected errors
    (connection refused, ...); anything it raises propagates.
    """
    started = time.monotonic()
    while True:
        if not alive():
            raise ServerDied("the server exited before it was ready")
        if probe():
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise NotReady(f"not ready within {timeout_s:.0f} s")
        time.sleep(interval_s)
