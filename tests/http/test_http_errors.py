"""docs/contract.md#errors over HTTP: every error status with the one JSON error shape."""

from __future__ import annotations

import json

import pytest
from http_checks import assert_error

Q, C = "Where is the harbour?", "The old harbour lies south of the town, beside the fish market."


def item(**overrides):
    value = {"question": Q, "context": C}
    value.update(overrides)
    return value


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"inputs": {"question": "a", "context": ', "json"),
        (b"", "empty"),
        (b"[1, 2", "json"),
        (b'{"inputs": {"question": "\xff\xfe", "context": "x"}}', "utf-8"),
    ],
    ids=["truncated-json", "empty-body", "broken-list", "invalid-utf8"],
)
def test_malformed_bodies_are_400(client, body, fragment):
    assert_error(client.invoke(body), 400, fragment)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"inputs": {"context": C}}, "question"),
        ({"inputs": {"question": Q}}, "context"),
        ({"inputs": item(question="")}, "question"),
        ({"inputs": item(context="   \n\t ")}, "context"),
        ({"inputs": item(question=42)}, "question"),
        ({"inputs": item(), "parameters": {"top_k": True}}, "top_k"),
        ({"inputs": item(), "parameters": {"top_k": 2.5}}, "top_k"),
        ({"inputs": item(), "parameters": {"top_k": 0}}, "top_k"),
        ({"inputs": item(), "parameters": {"max_answer_len": -1}}, "max_answer_len"),
        ({"inputs": item(), "parameters": {"max_seq_len": 100000}}, "max_seq_len"),
        ({"inputs": item(), "parameters": {"max_seq_len": 64, "doc_stride": 64}}, "doc_stride"),
        ({"inputs": item(), "parameters": {"handle_impossible_answer": "yes"}}, "handle_impossible_answer"),
        ({"inputs": item(), "parameters": {"temperature": 1}}, "temperature"),
        ({"inputs": item(), "extra": 1}, "extra"),
        ({"inputs": []}, "empty"),
        ([], "empty"),
        ({"inputs": [item(), item(context=""), item()]}, "1"),
        ({"inputs": "just a string"}, "inputs"),
    ],
    ids=[
        "missing-question",
        "missing-context",
        "empty-question",
        "whitespace-context",
        "question-not-string",
        "top_k-bool",
        "top_k-float",
        "top_k-zero",
        "max_answer_len-negative",
        "max_seq_len-too-large",
        "doc_stride-not-below-max_seq_len",
        "bool-param-string",
        "unknown-parameter",
        "unknown-top-level-key",
        "empty-batch",
        "empty-plain-list",
        "batch-with-one-bad-item",
        "inputs-wrong-type",
    ],
)
def test_invalid_requests_are_400_naming_the_problem(client, body, fragment):
    assert_error(client.invoke(body), 400, fragment)


def test_too_many_items_is_rejected_naming_the_limit(client):
    response = client.invoke({"inputs": [item() for _ in range(65)]})  # QA_MAX_ITEMS_PER_REQUEST default 64
    assert response.status_code in (400, 413)
    assert_error(response, response.status_code, "64")


def test_too_many_windows_is_rejected_naming_the_limit(client):
    context = " ".join(f"word{i}" for i in range(6000))
    body = {"inputs": item(context=context), "parameters": {"max_seq_len": 32, "doc_stride": 8}}
    response = client.invoke(body)
    assert response.status_code in (400, 413)
    assert_error(response, response.status_code, "256")  # QA_MAX_WINDOWS_PER_REQUEST default 256


@pytest.mark.parametrize(
    "accept", ["text/html", "image/png", "application/xml, text/plain", "application/json;q=0"]
)
def test_unsupported_accept_is_406(client, accept):
    assert_error(client.invoke({"inputs": item()}, accept=accept), 406)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded", "image/png"]
)
def test_unsupported_content_type_is_415(client, content_type):
    assert_error(client.invoke(json.dumps({"inputs": item()}), content_type=content_type), 415)


def test_body_over_the_limit_is_413_from_the_proxy(client):
    body = b'{"inputs": {"question": "q", "context": "' + b"a" * (6 * 1024 * 1024 + 10) + b'"}}'
    assert_error(client.invoke(body), 413, "6 MB")


def test_body_just_under_the_limit_reaches_the_handler(client):
    # 5 MB of context: accepted by the proxy, then bounded by the handler (windows limit), not a 413.
    body = {"inputs": item(context="word " * (1024 * 1024))}
    response = client.invoke(body)
    assert response.status_code in (400, 413)
    message = assert_error(response, response.status_code)["message"]
    assert "6 MB" not in message and "256" in message


def test_unknown_route_is_404(client):
    assert_error(client.get("/no-such-route"), 404)
    assert_error(client.request("POST", "/predict", data=b"{}"), 404)


def test_wrong_method_is_405(client):
    assert_error(client.get("/invocations"), 405)
    assert_error(client.request("DELETE", "/ping"), 405)


def test_a_bad_request_leaves_the_server_serving(client):
    good = {"inputs": item()}
    before = client.invoke(good).json()
    for bad in (b"\x00\x01garbage", b'{"inputs": [', b"[" * 10000 + b"]" * 10000):
        assert client.invoke(bad).status_code == 400
    assert client.invoke(good).json() == before
    assert client.get("/ping").status_code == 200
