"""What an operator sees, on the stack on this host: the per-request log line (JSON logs), /ping
kept out of the logs, and /metrics adding up every gunicorn worker (serving/metrics.py)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import requests
from targets import TINY_MODEL, HostTarget

pytestmark = pytest.mark.slow

QUESTION = {
    "inputs": {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843."}
}
PHASES = ("parse_ms", "tokenize_ms", "queue_ms", "forward_ms", "decode_ms", "encode_ms", "total_ms")


@pytest.fixture
def stack(tmp_path, request):
    target = HostTarget(TINY_MODEL, tmp_path, request.param).start()
    try:
        target.wait_ready()
        yield target
    finally:
        target.stop()


def json_lines(target: HostTarget) -> list[dict]:
    """Every log line of the stack's Python processes and nginx's access log, parsed. nginx's own
    error log has no JSON form: its lines (they start with a date, 2026/12/01) are left out."""
    out = []
    for line in target.logs().splitlines():
        if re.match(r"\d{4}/\d\d/\d\d ", line) or not line.strip():
            continue
        out.append(json.loads(line))  # fails the test on any line that is not JSON
    return out


@pytest.mark.parametrize(
    "stack", [{"QA_LOG_FORMAT": "json", "QA_BATCH_WAIT_MS": "400", "QA_PARALLEL_BATCHES": "1"}], indirect=True
)
def test_one_json_line_per_request_with_its_batch_and_phases(stack):
    def send(rid: str) -> None:
        headers = {"X-Request-Id": rid, "X-Amzn-SageMaker-Inference-Id": f"sm-{rid}"}
        response = requests.post(f"{stack.base_url}/invocations", json=QUESTION, headers=headers, timeout=30)
        assert response.status_code == 200, response.text

    threads = [threading.Thread(target=send, args=(rid,)) for rid in ("obs-1", "obs-2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    bad = requests.post(
        f"{stack.base_url}/invocations", data=b"{", headers={"X-Request-Id": "obs-bad"}, timeout=30
    )
    assert bad.status_code == 400
    time.sleep(0.5)  # the last lines reach the log file

    lines = json_lines(stack)
    served = {line["request_id"]: line for line in lines if line.get("logger") == "serving.requests"}
    for rid in ("obs-1", "obs-2"):
        line = served[rid]
        assert line["inference_id"] == f"sm-{rid}" and line["status"] == 200
        assert (line["items"], line["windows"]) == (1, 1) and line["tokens"] > 5
        # The two requests met in the batcher (a 400 ms wait for company, one lane): one pass of 2.
        assert line["batch_sizes"] == [2], line
        assert all(isinstance(line[name], float) for name in PHASES), line
        assert line["total_ms"] >= line["queue_ms"] + line["forward_ms"]
    failed = served["obs-bad"]
    assert failed["status"] == 400 and "malformed JSON" in failed["error"] and failed["windows"] == 0
    access = [line for line in lines if line.get("logger") == "nginx.access"]
    assert {line["request_id"] for line in access} >= {"obs-1", "obs-2", "obs-bad"}
    assert all(line["level"] for line in lines if line.get("logger") != "nginx.access")


@pytest.mark.parametrize("stack", [{"QA_LOG_FORMAT": "json"}], indirect=True)
def test_health_checks_leave_no_info_line(stack):
    before = len(stack.logs().splitlines())
    for _ in range(5):
        assert requests.get(f"{stack.base_url}/ping", timeout=10).status_code == 200
    assert requests.get(f"{stack.base_url}/metrics", timeout=10).status_code == 200
    time.sleep(0.5)
    added = stack.logs().splitlines()[before:]
    assert not [line for line in added if "/ping" in line or "/metrics" in line], added


def scrape(target: HostTarget) -> str:
    response = requests.get(f"{target.base_url}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.mark.parametrize(
    "stack", [{"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "QA_TORCH_THREADS": "1"}], indirect=True
)
def test_metrics_add_up_every_worker(stack):
    assert sample(scrape(stack), "qa_requests_total", '{status="200"}') in (None, 0.0)
    session = requests.Session()
    for _ in range(6):
        assert session.post(f"{stack.base_url}/invocations", json=QUESTION, timeout=30).status_code == 200
    assert session.post(f"{stack.base_url}/invocations", data=b"{", timeout=30).status_code == 400
    pids = set()
    for _ in range(6):  # whichever worker answers the scrape, it reports both workers' counts
        text = scrape(stack)
        assert sample(text, "qa_requests_total", '{status="200"}') == 6.0
        assert sample(text, "qa_requests_total", '{status="400"}') == 1.0
        assert sample(text, "qa_items_total") == 6.0 and sample(text, "qa_windows_total") == 6.0
        assert sample(text, "qa_request_phase_seconds_count", '{phase="forward"}') == 6.0
        assert sample(text, "qa_forward_batch_windows_count") == 6.0
        pids |= set(re.findall(r'^qa_resident_memory_bytes\{pid="(\d+)"\} [1-9]', text, re.MULTILINE))
        assert len(set(re.findall(r'^qa_model_load_seconds\{pid="(\d+)"\}', text, re.MULTILINE))) == 2
    assert len(pids) == 2, "each worker's resident memory, by pid"
