"""Helpers for the process tests (imported as `process_helpers`): deterministic slow user code.

`slow_model_dir` is a model dir whose user code/inference.py (loaded via the override path)
overrides model_fn, input_fn and predict_fn but keeps the built-in output_fn. It blocks on gate
files instead of sleeping: `hold-load` makes model_fn wait for `release-load`; a request body
{"block": true} makes predict_fn wait for `release-requests`. input_fn touches `received-<id>`
and predict_fn `entered-<id>` so a test knows where each request is.

Also the polls and the /proc look-ups the process tests (and tests/faults) share. On pytest's
`pythonpath` (pyproject.toml).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# The user code's common part (a .format template: `gates`): the gate files and a model_fn that
# waits for `release-load` while `hold-load` exists.
GATED_CODE = """
import json
import os
import time
from pathlib import Path

GATES = Path({gates!r})


def _wait(name, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not (GATES / name).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {{name}} never opened")
        time.sleep(0.02)


def model_fn(model_dir, context):
    if (GATES / "hold-load").exists():
        _wait("release-load")
    return {{"model_dir": str(model_dir)}}
"""
GATED_PREDICT_FN = """

def predict_fn(data, model, context):
    (GATES / f"entered-{{context.request_id}}").touch()
    if isinstance(data, dict) and data.get("block"):
        _wait("release-requests")
    return {{"score": 1.0, "start": 0, "end": 4, "answer": "done"}}
"""
SLOW_INFERENCE = (
    GATED_CODE
    + """

def input_fn(body, content_type, context):
    (GATES / f"received-{{context.request_id}}").touch()
    return json.loads(body)
"""
    + GATED_PREDICT_FN
)


def make_slow_model_dir(root: Path, code: str = SLOW_INFERENCE) -> tuple[Path, Path]:
    """(model_dir, gates_dir): a tiny model dir holding only user code (`code`, formatted with the
    gate directory; plus a marker file). The gate directory is writable by all: the workers may
    run as another user (the image's `qa`)."""
    gates = root / "gates"
    gates.mkdir(parents=True)
    gates.chmod(0o777)
    model_dir = root / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "weights.txt").write_text("the user code needs no weights\n")
    (model_dir / "code" / "inference.py").write_text(code.format(gates=str(gates)))
    return model_dir, gates


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition", target=None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if target is not None and not target.is_alive():
            raise AssertionError(f"stack died while waiting for {what}; logs:\n{target.logs()}")
        if time.monotonic() > deadline:
            logs = f"; logs:\n{target.logs()}" if target is not None else ""
            raise AssertionError(f"timed out waiting for {what}{logs}")
        time.sleep(0.05)


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except FileNotFoundError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def child_pid(parent: int, needle: str) -> int:
    matches = [pid for pid in children_of(parent) if needle in cmdline(pid)]
    assert len(matches) == 1, f"expected one child of {parent} matching {needle!r}: {matches}"
    return matches[0]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
