"""serving/app.py in-process (falcon.testing, a fake handler): readiness, the error map, headers,
the time budget, counted from when nginx had read the request."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path

import falcon.testing
import pytest

from qa import errors as qa_errors
from serving.app import arrived, create_app
from serving.errors import (
    BadRequest,
    GatewayTimeout,
    InternalError,
    NotAcceptable,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from serving.settings import Settings

ERROR_KEYS = {"code", "type", "message"}


class FakeHandler:
    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        self.load_gate = threading.Event()
        self.load_gate.set()
        self.request_gate = threading.Event()
        self.request_gate.set()
        self.raise_on_load: BaseException | None = None
        self.raise_on_invoke: BaseException | None = None
        self.calls: list[tuple] = []

    def load_model(self) -> None:
        assert self.load_gate.wait(10)
        if self.raise_on_load:
            raise self.raise_on_load

    def warm_up(self) -> None:
        pass

    def invoke(self, body, content_type, accept, context):
        self.calls.append((body, content_type, accept, context))
        if body == b"block":
            assert self.request_gate.wait(10)
        if body == b"slow":
            time.sleep(0.4)
        if self.raise_on_invoke:
            raise self.raise_on_invoke
        return b'{"ok": true}', "application/json"


@pytest.fixture
def settings(tmp_path):
    return Settings(
        run_dir=tmp_path / "run", model_dir=tmp_path, workers=1, requests_per_worker=2, request_timeout_s=2
    )


@pytest.fixture
def fake(tmp_path):
    return FakeHandler(tmp_path)


@pytest.fixture
def make_client(settings, fake):
    fatal = []

    def make(start=True, ready=True, **overrides):
        s = dataclasses.replace(settings, **overrides)
        app = create_app(s, lambda: fake, on_fatal=lambda: fatal.append(True))
        if start:
            app.start()
        client = falcon.testing.TestClient(app)
        client.fatal = fatal
        client.app_ = app
        if ready:
            deadline = time.monotonic() + 10
            while client.simulate_get("/ping").status_code != 200:
                assert time.monotonic() < deadline and not fatal, "app never became ready"
                time.sleep(0.01)
        return client

    return make


def assert_error(result, status: int) -> dict:
    assert result.status_code == status, result.text
    assert result.headers["content-type"] == "application/json"
    body = result.json
    assert set(body) == ERROR_KEYS and body["code"] == status and body["message"]
    assert "Traceback" not in result.text
    return body


def test_ping_is_503_while_loading_then_200(make_client, fake):
    fake.load_gate.clear()
    client = make_client(ready=False)
    loading = client.simulate_get("/ping")
    assert_error(loading, 503)
    assert loading.headers["retry-after"] == "5"
    assert_error(client.simulate_post("/invocations", body=b"{}"), 503)
    fake.load_gate.set()
    deadline = time.monotonic() + 10
    while client.simulate_get("/ping").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert client.simulate_post("/invocations", body=b"{}").status_code == 200


def test_ping_waits_for_every_worker_at_start_up(make_client, settings):
    client = make_client(ready=False, workers=2)
    time.sleep(0.2)
    assert_error(client.simulate_get("/ping"), 503)  # only this worker's marker exists
    # A second live process (here: pytest's parent) reports ready: the stack is up.
    other = settings.run_dir / "ready" / str(os.getppid())
    other.touch()
    assert client.simulate_get("/ping").status_code == 200
    other.unlink()
    assert client.simulate_get("/ping").status_code == 200  # once up, a worker restart does not flap /ping


def test_a_failed_load_is_fatal_for_the_worker(make_client, fake, caplog):
    fake.raise_on_load = RuntimeError("weights are corrupt")
    with caplog.at_level(logging.CRITICAL):
        client = make_client(ready=False)
        deadline = time.monotonic() + 10
        while not client.fatal:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert "model failed to load" in caplog.text and "weights are corrupt" in caplog.text
    assert_error(client.simulate_get("/ping"), 503)


@pytest.mark.parametrize(
    "error, status, type_",
    [
        (BadRequest("bad"), 400, "BadRequest"),
        (NotAcceptable("no"), 406, "NotAcceptable"),
        (PayloadTooLarge("big"), 413, "PayloadTooLarge"),
        (UnsupportedMediaType("type"), 415, "UnsupportedMediaType"),
        (InternalError("oops"), 500, "InternalServerError"),
        (ServiceUnavailable("busy", retry_after_s=3), 503, "ServiceUnavailable"),
        (GatewayTimeout("slow"), 504, "GatewayTimeout"),
        # The QA library's errors, which carry no status: the error table gives it.
        (qa_errors.InvalidRequest("bad field"), 400, "BadRequest"),
        (qa_errors.UnsupportedAccept("no type"), 406, "NotAcceptable"),
        (qa_errors.RequestTooLarge("too many"), 413, "PayloadTooLarge"),
        (qa_errors.UnsupportedContentType("xml"), 415, "UnsupportedMediaType"),
        (qa_errors.PredictionError("unencodable"), 500, "InternalServerError"),
        (qa_errors.Overloaded("queue full", retry_after_s=3), 503, "ServiceUnavailable"),
        (qa_errors.DeadlineExceeded("late"), 504, "GatewayTimeout"),
    ],
)
def test_errors_map_to_their_status_and_shape(make_client, fake, error, status, type_):
    client = make_client()
    fake.raise_on_invoke = error
    result = client.simulate_post("/invocations", body=b"{}")
    body = assert_error(result, status)
    assert body["type"] == type_ and body["message"] == error.message
    if status == 503:
        assert result.headers["retry-after"] == "3"


def test_unexpected_errors_are_500_with_the_traceback_only_in_the_log(make_client, fake, caplog):
    client = make_client()
    fake.raise_on_invoke = KeyError("secret internals")
    with caplog.at_level(logging.ERROR):
        result = client.simulate_post("/invocations", body=b"{}", headers={"X-Request-Id": "rid-7"})
    body = assert_error(result, 500)
    assert "secret internals" not in result.text and "rid-7" in body["message"]
    assert "Traceback" in caplog.text and "secret internals" in caplog.text
    fake.raise_on_invoke = None
    assert client.simulate_post("/invocations", body=b"{}").status_code == 200


def test_unknown_routes_and_methods_use_the_error_shape(make_client):
    client = make_client()
    assert_error(client.simulate_get("/nope"), 404)
    result = client.simulate_get("/invocations")
    assert_error(result, 405)
    assert "POST" in result.headers["allow"]


def test_raw_headers_reach_the_handler_and_json_is_the_default_type(make_client, fake):
    client = make_client()
    client.simulate_post("/invocations", body=b"{}")
    client.simulate_post(
        "/invocations",
        body=b"{}",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/jsonlines;q=0.5, */*",
            "X-Request-Id": "abc",
            "X-Amzn-SageMaker-Custom-Attributes": "k=v",
        },
    )
    (_, ct1, accept1, _), (_, ct2, accept2, ctx2) = fake.calls[-2:]
    assert (ct1, accept1) == ("application/json", None)
    assert (ct2, accept2) == ("application/json; charset=utf-8", "application/jsonlines;q=0.5, */*")
    assert (ctx2.request_id, ctx2.custom_attributes) == ("abc", "k=v")
    assert ctx2.deadline is not None and ctx2.settings.request_timeout_s == 2


def test_custom_attributes_and_request_id_are_echoed(make_client, fake):
    client = make_client()
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "trace=1", "X-Request-Id": "r-9"}
    ok = client.simulate_post("/invocations", body=b"{}", headers=headers)
    assert (
        ok.headers["x-amzn-sagemaker-custom-attributes"] == "trace=1" and ok.headers["x-request-id"] == "r-9"
    )
    fake.raise_on_invoke = BadRequest("bad")
    bad = client.simulate_post("/invocations", body=b"{}", headers=headers)
    assert bad.headers["x-amzn-sagemaker-custom-attributes"] == "trace=1"


def test_request_id_is_in_the_handlers_log_lines(make_client, fake, caplog):
    from serving.logs import RequestIdFilter

    client = make_client()
    fake.raise_on_invoke = BadRequest("nope")
    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    with caplog.at_level(logging.INFO):
        client.simulate_post("/invocations", body=b"{}", headers={"X-Request-Id": "req-123"})
    assert any(getattr(r, "request_id", None) == "req-123" for r in caplog.records)


def test_a_request_whose_budget_ran_out_while_it_waited_is_dropped_before_any_work(make_client, fake):
    client = make_client()  # budget 2 s; nginx stamps when it had read the request
    waited = {"X-Request-Start": f"t={time.time() - 2.5:.3f}"}
    dropped = client.simulate_post("/invocations", body=b"{}", headers=waited)
    body = assert_error(dropped, 503)
    assert dropped.headers["retry-after"] == "1"
    assert (
        "waited 2.5 s for a worker" in body["message"] and "SAGEMAKER_MODEL_SERVER_TIMEOUT" in body["message"]
    )
    assert fake.calls == []
    fresh = {"X-Request-Start": f"t={time.time() - 0.5:.3f}"}
    assert client.simulate_post("/invocations", body=b"{}", headers=fresh).status_code == 200
    assert len(fake.calls) == 1


def test_a_request_left_less_budget_than_requests_take_now_is_dropped_before_any_work(make_client, fake):
    client = make_client()  # budget 2 s
    assert client.simulate_post("/invocations", body=b"slow").status_code == 200  # requests take 0.4 s
    short = {"X-Request-Start": f"t={time.time() - 1.8:.3f}"}  # 0.2 s left
    dropped = client.simulate_post("/invocations", body=b"slow", headers=short)
    assert "less than requests need now (0.6 s)" in assert_error(dropped, 503)["message"]
    assert len(fake.calls) == 1
    enough = {"X-Request-Start": f"t={time.time() - 1.0:.3f}"}  # 1 s left
    assert client.simulate_post("/invocations", body=b"slow", headers=enough).status_code == 200


def test_over_budget_is_504_and_a_request_still_waiting_for_a_thread_at_its_deadline_never_runs(
    make_client, fake
):
    client = make_client(requests_per_worker=1, request_timeout_s=1)
    fake.request_gate.clear()
    result = client.simulate_post("/invocations", body=b"block")
    assert "1 s" in assert_error(result, 504)["message"]
    # The timed-out work still holds the worker's one thread: the next request waits for it, and
    # is dropped at its own deadline without running.
    waited = client.simulate_post("/invocations", body=b"{}")
    assert "waited" in assert_error(waited, 503)["message"] and waited.headers["retry-after"] == "1"
    assert len(fake.calls) == 1
    fake.request_gate.set()
    deadline = time.monotonic() + 10
    while client.simulate_post("/invocations", body=b"{}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize(
    "header, arrived_s_ago",
    [
        (None, 0.0),
        ("t=1000.250", 0.75),  # nginx's $msec
        ("1000.5", 0.5),
        ("t=1002.0", 0.0),  # from the future (clocks): now
        ("t=soon", 0.0),
        ("t=-5000", 0.0),  # longer than any budget: not nginx's
    ],
)
def test_arrival_is_when_nginx_had_read_the_request(header, arrived_s_ago):
    assert arrived(header, wall_now=1001.0, now=50_000.0) == pytest.approx(50_000.0 - arrived_s_ago)


def test_execution_parameters(make_client):
    client = make_client(start=False, ready=False, max_concurrent_transforms=3, max_payload_mb=4)
    result = client.simulate_get("/execution-parameters")
    assert result.status_code == 200
    assert json.loads(result.text) == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": 4,
    }
