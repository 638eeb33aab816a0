"""serving/supervisor.py with stand-in children (small Python scripts), run in a subprocess so the
supervisor's signal handlers do not touch pytest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

# A child that records the signal it got, then exits 0 after `linger` seconds (or never, if ignoring).
CHILD = textwrap.dedent(
    """
    import signal, sys, time, pathlib
    name, record, mode = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
    def on_signal(signum, frame):
        with record.open("a") as f:
            f.write(f"{name} {signal.Signals(signum).name} {time.monotonic()}\\n")
        if mode != "ignore":
            sys.exit(0)
    for s in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(s, on_signal)
    (record.parent / f"{name}.started").touch()
    if mode.startswith("exit"):
        time.sleep(0.5)
        sys.exit(int(mode[4:]))
    while True:
        time.sleep(0.05)
    """
)

SUPERVISE = textwrap.dedent(
    """
    import json, signal, sys
    sys.path.insert(0, {root!r})
    from serving import logs
    from serving.supervisor import ChildSpec, Supervisor
    logs.configure(20)
    specs = [ChildSpec(n, [sys.executable, {child!r}, n, {record!r}, mode], signal.Signals[sig], code)
             for n, mode, sig, code in json.loads(sys.argv[1])]
    sys.exit(Supervisor(specs, shutdown_timeout_s=float(sys.argv[2])).run())
    """
)


def supervise(
    tmp_path: Path, children: list[tuple[str, str, str, int]], timeout_s: float = 5.0
) -> subprocess.Popen:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    record = tmp_path / "signals.txt"
    script = tmp_path / "supervise.py"
    script.write_text(SUPERVISE.format(root=str(ROOT), child=str(child), record=str(record)))
    proc = subprocess.Popen(
        [sys.executable, str(script), json.dumps(children), str(timeout_s)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 20
    while not all(
        (tmp_path / f"{name}.started").exists() for name, mode, *_ in children if not mode.startswith("exit")
    ):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"children did not start: {proc.communicate()[1]}")
        time.sleep(0.02)
    return proc


def signals_received(tmp_path: Path) -> list[tuple[str, str]]:
    path = tmp_path / "signals.txt"
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_children_in_reverse_order_and_exits_0(tmp_path, stop_signal):
    proc = supervise(tmp_path, [("gunicorn", "run", "SIGTERM", 4), ("nginx", "run", "SIGQUIT", 3)])
    proc.send_signal(stop_signal)
    stderr = proc.communicate(timeout=15)[1]
    assert proc.returncode == 0, stderr
    assert signals_received(tmp_path) == [("nginx", "SIGQUIT"), ("gunicorn", "SIGTERM")]
    assert "stopped cleanly" in stderr


def test_a_dead_child_stops_the_others_and_the_exit_code_names_it(tmp_path):
    proc = supervise(tmp_path, [("gunicorn", "run", "SIGTERM", 4), ("nginx", "exit7", "SIGQUIT", 3)])
    stderr = proc.communicate(timeout=15)[1]
    assert proc.returncode == 3, stderr
    assert signals_received(tmp_path) == [("gunicorn", "SIGTERM")]
    assert "nginx exited unexpectedly (exit code 7)" in stderr


def test_a_child_ignoring_its_signal_is_killed_after_a_bounded_wait(tmp_path):
    proc = supervise(
        tmp_path, [("gunicorn", "run", "SIGTERM", 4), ("nginx", "ignore", "SIGQUIT", 3)], timeout_s=7
    )
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=30)[1]
    took = time.monotonic() - started
    assert proc.returncode == 1, stderr
    assert "nginx did not stop within its time; sending SIGKILL" in stderr
    # nginx gets the budget minus the time reserved for gunicorn; gunicorn still stops gracefully.
    assert 1.5 < took < 7 + 3
    assert signals_received(tmp_path) == [("nginx", "SIGQUIT"), ("gunicorn", "SIGTERM")]


def test_describe_status():
    from serving.supervisor import describe_status

    assert describe_status(0) == "exit code 0"
    assert describe_status(-9) == "signal SIGKILL"
