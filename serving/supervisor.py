"""Starts nginx and gunicorn as children and stops them the way SageMaker needs.

- Start: gunicorn first; nginx once gunicorn's socket exists (so no 502 while starting).
- SIGTERM/SIGINT: children stop in reverse start order, each with its graceful signal (nginx
  SIGQUIT drains in-flight requests, then gunicorn SIGTERM), a bounded wait, then SIGKILL. The
  whole stop fits `shutdown_timeout_s` (25 s: SageMaker sends SIGKILL 30 s after SIGTERM).
  Exit 0 when every child stopped by itself.
- A child dies: the others are stopped and the exit code says which child died.
- As PID 1 in a container it also reaps orphaned processes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from serving import exit_codes

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class ChildSpec:
    name: str
    argv: list[str]
    stop_signal: signal.Signals
    exit_code_if_died: int
    cwd: Path | None = None
    env: dict[str, str] | None = None  # None: this process's environment
    # Start the next child only once this returns True (e.g. a socket exists).
    ready: Callable[[], bool] | None = None


def describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _die_with_parent() -> None:
    # If the supervisor itself is killed, its children go too (no orphaned nginx on a dev machine).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Supervisor:
    def __init__(self, specs: list[ChildSpec], shutdown_timeout_s: float, reserve_per_child_s: float = 5.0):
        self.specs = specs
        self.shutdown_timeout_s = shutdown_timeout_s
        # Time kept for each child still to stop after the current one.
        self.reserve_per_child_s = reserve_per_child_s
        self.children: dict[str, subprocess.Popen] = {}
        self._stop_signal: int | None = None

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def _reap(self) -> None:
        """Collect exit statuses (ours into Popen.returncode; orphans' when we are PID 1)."""
        by_pid = {proc.pid: proc for proc in self.children.values()}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = by_pid.get(pid)
            if proc is not None and proc.returncode is None:
                proc.returncode = os.waitstatus_to_exitcode(status)

    def _dead_child(self) -> tuple[ChildSpec, int] | None:
        self._reap()
        for spec in self.specs:
            proc = self.children.get(spec.name)
            if proc is not None and proc.returncode is not None:
                return spec, proc.returncode
        return None

    def _start(self, spec: ChildSpec) -> None:
        log.info("starting %s: %s", spec.name, " ".join(spec.argv))
        self.children[spec.name] = subprocess.Popen(
            spec.argv, cwd=spec.cwd, env=spec.env, preexec_fn=_die_with_parent
        )  # noqa: PLW1509 - no threads here

    def _stop_all(self, deadline: float) -> bool:
        """Stop running children in reverse start order; True if all stopped by themselves."""
        clean = True
        running = [
            s
            for s in reversed(self.specs)
            if s.name in self.children and self.children[s.name].returncode is None
        ]
        for index, spec in enumerate(running):
            proc = self.children[spec.name]
            later = len(running) - index - 1
            child_deadline = max(deadline - later * self.reserve_per_child_s, time.monotonic() + 1.0)
            log.info("stopping %s (pid %d) with %s", spec.name, proc.pid, spec.stop_signal.name)
            try:
                proc.send_signal(spec.stop_signal)
            except ProcessLookupError:
                pass
            while proc.returncode is None and time.monotonic() < child_deadline:
                time.sleep(POLL_INTERVAL_S)
                self._reap()
            if proc.returncode is None:
                log.error("%s did not stop within its time; sending SIGKILL", spec.name)
                proc.kill()
                proc.wait()
                clean = False
            else:
                log.info("%s stopped (%s)", spec.name, describe_status(proc.returncode))
        return clean

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            return self._run()
        finally:
            for proc in self.children.values():
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()

    def _run(self) -> int:
        for spec in self.specs:
            self._start(spec)
            while spec.ready is not None and not spec.ready():
                if self._stop_signal is not None or self._dead_child() is not None:
                    break
                time.sleep(POLL_INTERVAL_S)
            if self._stop_signal is not None or self._dead_child() is not None:
                break
        while True:
            if self._stop_signal is not None:
                name = signal.Signals(self._stop_signal).name
                log.info("received %s: draining and stopping (at most %s s)", name, self.shutdown_timeout_s)
                started = time.monotonic()
                clean = self._stop_all(started + self.shutdown_timeout_s)
                took = time.monotonic() - started
                if clean:
                    log.info("stopped cleanly in %.1f s", took)
                    return exit_codes.OK
                log.error("stopped in %.1f s, but a child had to be killed", took)
                return exit_codes.UNCLEAN_STOP
            dead = self._dead_child()
            if dead is not None:
                spec, returncode = dead
                log.error(
                    "%s exited unexpectedly (%s); stopping the rest and exiting with code %d",
                    spec.name,
                    describe_status(returncode),
                    spec.exit_code_if_died,
                )
                self._stop_all(time.monotonic() + self.shutdown_timeout_s)
                return spec.exit_code_if_died
            time.sleep(POLL_INTERVAL_S)
