"""The host stack as a Batch Transform container (SAGEMAKER_BATCH): a full default mini-batch of
short records answered line for line with the worker's memory bounded (tests/batch_checks.py;
the image's twin is tests/container/test_container_batch_transform.py)."""

from __future__ import annotations

from pathlib import Path

from batch_checks import MAX_GROWTH_MB, send_mini_batch
from process_helpers import children_of
from targets import TINY_MODEL, start_host_target


def worker_memory_kb(pids: list[int]) -> tuple[int, int]:
    """(resident, peak) KiB of the process with the most resident memory among `pids`."""
    rows = []
    for pid in pids:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        rows.append((int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])))
    return max(rows)


def test_a_full_default_mini_batch_is_answered_line_for_line(tmp_path) -> None:
    target = start_host_target(TINY_MODEL, tmp_path, {"SAGEMAKER_BATCH": "true"})
    try:
        processes = [pid for child in children_of(target.proc.pid) for pid in (child, *children_of(child))]
        resident_before, _ = worker_memory_kb(processes)
        send_mini_batch(target.base_url)
        _, peak = worker_memory_kb(processes)
        assert (peak - resident_before) / 1024 < MAX_GROWTH_MB
    finally:
        target.stop()
