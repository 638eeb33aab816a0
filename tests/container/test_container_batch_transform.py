"""The image as a Batch Transform container (SAGEMAKER_BATCH, as SageMaker and the SDK's local
mode set it): a full default mini-batch of short JSON Lines records (6 MB, tens of thousands of
lines, where the real-time limit is 64 items) answered line for line, a bad line alone, with the
worker's memory bounded; /execution-parameters advertises what fits the invocation budget."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests
from targets import TINY_MODEL

pytestmark = pytest.mark.container

PAYLOAD_BYTES = 6 * 1024 * 1024 - 4096  # just under SageMaker's default mini-batch of 6 MB
# The worker's peak over its resident size before the mini-batch: the body, its records and
# answers, one chunk of windows. Holding every window at once took several times more.
MAX_GROWTH_MB = 250
WORKER_MEMORY = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    except OSError:
        continue
    if b"gunicorn" in cmd:
        print(pid, status["VmRSS"].split()[0], status["VmHWM"].split()[0])
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
    rows = [tuple(map(int, line.split()[1:])) for line in out.splitlines()]
    return max(rows)


def short_records() -> list[str]:
    lines, size, index = [], 0, 0
    while True:
        line = json.dumps(
            {
                "question": f"Who wrote letter {index}?",
                "context": f"Letter {index} was written by Ada in {1800 + index % 200}.",
            }
        )
        if size + len(line) + 1 > PAYLOAD_BYTES:
            return lines
        lines.append(line)
        size += len(line) + 1
        index += 1


def test_a_full_default_mini_batch_is_answered_line_for_line(image: str, containers) -> None:
    target = containers(image, TINY_MODEL, {"SAGEMAKER_BATCH": "true"})
    params = requests.get(f"{target.base_url}/execution-parameters", timeout=10).json()
    assert params["BatchStrategy"] == "MULTI_RECORD" and params["MaxConcurrentTransforms"] >= 1
    assert 1 <= params["MaxPayloadInMB"] <= 6
    lines = short_records()
    lines[1000] = '{"question": "Who?"}'  # no context: answered alone with an error line
    resident_before, _ = worker_memory_kb(target.name)
    resp = requests.post(
        f"{target.base_url}/invocations",
        data=("\n".join(lines) + "\n").encode(),
        headers={"Content-Type": "application/jsonlines"},
        timeout=600,
    )
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["Content-Type"].startswith("application/jsonlines")
    answers = [json.loads(line) for line in resp.text.splitlines()]
    assert len(lines) > 20_000 and len(answers) == len(lines)
    assert "context" in answers[1000]["error"]["message"]
    assert all("answer" in answer for i, answer in enumerate(answers) if i != 1000)
    _, peak = worker_memory_kb(target.name)
    growth_mb = (peak - resident_before) / 1024
    print(f"{len(lines)} records, {len(resp.content) / 1e6:.1f} MB out; worker peak +{growth_mb:.0f} MB")
    assert growth_mb < MAX_GROWTH_MB
