"""The image as a Batch Transform container (SAGEMAKER_BATCH, as SageMaker sets it): a full default
mini-batch of short records answered line for line with the worker's memory bounded
(tests/batch_checks.py; the host stack's twin is tests/process/test_process_batch_transform.py)."""

from __future__ import annotations

import subprocess

import pytest
from batch_checks import MAX_GROWTH_MB, send_mini_batch
from targets import TINY_MODEL

pytestmark = pytest.mark.container

WORKER_MEMORY = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    except OSError:
        continue
    if b"gunicorn" in cmd:
        print(status["VmRSS"].split()[0], status["VmHWM"].split()[0])
"""


def worker_memory_kb(name: str) -> tuple[int, int]:
    """(resident, peak) KiB of the gunicorn process with the most resident memory (the worker)."""
    out = subprocess.run(
        ["docker", "exec", name, "/opt/venv/bin/python", "-c", WORKER_MEMORY],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return max(tuple(map(int, line.split())) for line in out.splitlines())


def test_a_full_default_mini_batch_is_answered_line_for_line(image: str, containers) -> None:
    target = containers(image, TINY_MODEL, {"SAGEMAKER_BATCH": "true"})
    resident_before, _ = worker_memory_kb(target.name)
    send_mini_batch(target.base_url)
    _, peak = worker_memory_kb(target.name)
    assert (peak - resident_before) / 1024 < MAX_GROWTH_MB
