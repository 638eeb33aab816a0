"""serving/mms_service.py with a stand-in for MMS's context: what one model's worker does with the
requests MMS hands it (the real server is in tests/container/test_container_multi_model.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from golden_cases import load_cases, model_dir

from serving import mms_service


class FakeRequest:
    def __init__(self, headers: dict[str, str]):
        self.headers = headers

    def get_request_properties(self) -> dict:
        return self.headers


class FakeContext:
    """The parts of mms.context.Context that the service uses."""

    def __init__(self, model: Path, headers: list[dict[str, str]]):
        self.model_name = model.name
        self.system_properties = {"model_dir": str(model), "gpu_id": None, "batch_size": 1}
        self.request_processor = [FakeRequest(h) for h in headers]
        self.status: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}
        self.headers: dict[int, dict[str, str]] = {}

    def get_request_id(self, idx: int = 0) -> str:
        return f"req-{idx}"

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.headers.setdefault(idx, {})[key] = value


@pytest.fixture(scope="module")
def service():
    model = model_dir("distilbert-tiny-s1")
    service = mms_service.QAService()
    service.initialize(FakeContext(model, []))
    return service


def test_a_batch_of_requests_gets_answers_and_errors_in_order(service):
    case = next(
        c for c in load_cases() if c["model"] == "distilbert-tiny-s1" and isinstance(c["expected"], dict)
    )
    requests = [
        {"body": json.dumps(case["request"]).encode()},
        {"body": b'{"inputs": {"question": "Who?"}}'},
        {"body": b"question,context\nWho wrote it?,Ada wrote it.\n"},
    ]
    headers = [
        {"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "trace=7"},
        {"content-type": "application/json"},
        {"Content-Type": "text/csv", "Accept": "application/jsonlines"},
    ]
    context = FakeContext(model_dir("distilbert-tiny-s1"), headers)
    out = service.handle(requests, context)

    assert len(out) == 3
    got = json.loads(out[0])
    want = case["expected"]
    assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
    assert context.content_types[0].startswith("application/json") and 0 not in context.status
    assert context.headers[0] == {"X-Amzn-SageMaker-Custom-Attributes": "trace=7"}

    error = json.loads(out[1])
    assert context.status[1] == (400, "BadRequest")
    assert error["code"] == 400 and "context" in error["message"]

    assert context.content_types[2] == "application/jsonlines"
    assert json.loads(out[2].decode().splitlines()[0])["answer"]


def test_an_unexpected_failure_is_a_json_500_without_a_traceback(service, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.handler, "invoke", broken)
    context = FakeContext(model_dir("distilbert-tiny-s1"), [{"Content-Type": "application/json"}])
    [out] = service.handle([{"body": b"{}"}], context)
    body = json.loads(out)
    assert context.status[0][0] == 500 and body["code"] == 500
    assert "secret" not in body["message"]


@pytest.fixture
def unregistered(monkeypatch) -> list[tuple[str, int]]:
    """What the service asked mms_unregister to take off MMS's list (not started for real)."""
    started: list[tuple[str, int]] = []
    monkeypatch.setattr(mms_service.mms_unregister, "start", lambda name, port: started.append((name, port)))
    monkeypatch.setenv("SAGEMAKER_MULTI_MODEL", "true")  # as mms_launch.py sets it for the workers
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "8123")
    return started


def test_a_load_that_would_not_fit_is_a_memory_error_and_unregisters_the_model(unregistered, monkeypatch):
    import qa.memory

    monkeypatch.setattr(qa.memory, "free_bytes", lambda *a, **k: 1 << 20)
    service = mms_service.QAService()
    with pytest.raises(MemoryError, match=r"needs about [\d,]+ MB and the container has 1 MB free"):
        service.initialize(FakeContext(model_dir("distilbert-tiny-s2"), []))  # MMS answers it 507
    assert service.handler is None
    assert unregistered == [("distilbert-tiny-s2", 8123)]


def test_a_users_model_fn_out_of_memory_is_handled_the_same_way(unregistered, tmp_path):
    model = tmp_path / "hungry"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text("def model_fn(model_dir):\n    raise MemoryError\n")
    with pytest.raises(MemoryError):
        mms_service.QAService().initialize(FakeContext(model, []))
    assert unregistered == [("hungry", 8123)]


def test_a_loaded_model_logs_what_it_holds(unregistered, capsys):
    mms_service.QAService().initialize(FakeContext(model_dir("distilbert-tiny-s2"), []))
    line = next(x for x in capsys.readouterr().out.splitlines() if "serving.mms_service" in x)
    found = re.search(r"it holds [\d,]+ MB, [\d,]+ MB left free model=(\S+) model_memory_bytes=(\d+)", line)
    assert found, line
    assert found[1] == "distilbert-tiny-s2" and int(found[2]) > 50 << 20
    assert unregistered == []
