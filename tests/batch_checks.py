"""A full default Batch Transform mini-batch, for the tests that send one to the host stack
(tests/process) and to the image (tests/container): 6 MB of short JSON Lines records, one of them
bad, and the checks on the answer."""

from __future__ import annotations

import json

import requests

PAYLOAD_BYTES = 6 * 1024 * 1024 - 4096  # just under SageMaker's default mini-batch of 6 MB
BAD_LINE = 1000
# The worker's peak over its resident size before the mini-batch: the body, its records and
# answers, one chunk of windows (measured: about 110 MB in the image).
MAX_GROWTH_MB = 250


def short_records() -> list[str]:
    """Tens of thousands of short records (the real-time limit is 64 items), one with no context."""
    lines, size, index = [], 0, 0
    while True:
        record = {"question": f"Who wrote letter {index}?", "context": f"Letter {index} was written by Ada."}
        line = '{"question": "Who?"}' if index == BAD_LINE else json.dumps(record)
        if size + len(line) + 1 > PAYLOAD_BYTES:
            return lines
        lines.append(line)
        size += len(line) + 1
        index += 1


def send_mini_batch(base_url: str) -> None:
    """/execution-parameters in batch mode, then the mini-batch: every line answered in order,
    the bad one alone."""
    params = requests.get(f"{base_url}/execution-parameters", timeout=10).json()
    assert params["BatchStrategy"] == "MULTI_RECORD" and params["MaxConcurrentTransforms"] >= 1
    assert 1 <= params["MaxPayloadInMB"] <= 6
    lines = short_records()
    resp = requests.post(
        f"{base_url}/invocations",
        data=("\n".join(lines) + "\n").encode(),
        headers={"Content-Type": "application/jsonlines"},
        timeout=900,
    )
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["Content-Type"].startswith("application/jsonlines")
    answers = [json.loads(line) for line in resp.text.splitlines()]
    assert len(lines) > 20_000 and len(answers) == len(lines)
    assert "context" in answers[BAD_LINE]["error"]["message"]
    assert all("answer" in answer for i, answer in enumerate(answers) if i != BAD_LINE)
