"""docs/contract.md#requests over HTTP: body shapes, content types, charset parameters, Accept, golden answers."""

from __future__ import annotations

import json

import pytest
from golden_answers import assert_same_answers
from golden_cases import load_cases
from http_checks import assert_answer, assert_error

Q1, C1 = (
    "Where is the harbour?",
    "The old harbour lies south of the town, beside the fish market and the ferry pier.",
)
Q2, C2 = (
    "Who wrote the letter?",
    "The letter was written by Maria Lindqvist in the winter of 1921 in Uppsala.",
)
# The HTTP suite serves tests/fixtures/models/distilbert-tiny-s0 (tests/targets.py TINY_MODEL).
GOLDEN = [case for case in load_cases() if case["model"] == "distilbert-tiny-s0"]


def single(client, question: str, context: str, **parameters) -> dict:
    body = {"inputs": {"question": question, "context": context}}
    if parameters:
        body["parameters"] = parameters
    response = client.invoke(body)
    assert response.status_code == 200, response.text
    return response.json()


def test_inputs_object_gives_one_answer(client):
    response = client.invoke({"inputs": {"question": Q1, "context": C1}})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert_answer(response.json(), C1)


def test_top_k_gives_a_list_best_first(client):
    answers = single(client, Q1, C1, top_k=3)
    assert isinstance(answers, list) and 1 <= len(answers) <= 3
    for answer in answers:
        assert_answer(answer, C1)
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True)
    assert_same_answers(answers[0], single(client, Q1, C1))


def test_batch_under_inputs_answers_each_in_order(client):
    response = client.invoke({"inputs": [{"question": Q1, "context": C1}, {"question": Q2, "context": C2}]})
    assert response.status_code == 200, response.text
    first, second = response.json()
    assert_same_answers(first, single(client, Q1, C1))
    assert_same_answers(second, single(client, Q2, C2))


def test_plain_object_and_plain_list(client):
    plain = client.invoke({"question": Q1, "context": C1})
    assert plain.status_code == 200, plain.text
    assert_same_answers(plain.json(), single(client, Q1, C1))
    listed = client.invoke([{"question": Q1, "context": C1}, {"question": Q2, "context": C2}])
    assert listed.status_code == 200, listed.text
    assert_same_answers(listed.json(), [single(client, Q1, C1), single(client, Q2, C2)])


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        None,
    ],
)
def test_json_content_types_with_parameters_or_missing(client, content_type):
    response = client.invoke({"inputs": {"question": Q1, "context": C1}}, content_type=content_type)
    assert response.status_code == 200, response.text
    assert_same_answers(response.json(), single(client, Q1, C1))


def test_utf8_text_round_trips(client):
    context = "Le café de la gare ouvre à sept heures, près du musée d'Orsay à Paris."
    answer = single(client, "Quand ouvre le café ?", context)
    assert_answer(answer, context)


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "application/json",
        "application/*",
        "text/html;q=0.5, application/json",
        "application/json; q=0.9",
    ],
)
def test_accept_variants_answer_json(client, accept):
    response = client.invoke({"inputs": {"question": Q1, "context": C1}}, accept=accept)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert_same_answers(response.json(), single(client, Q1, C1))


def test_jsonlines_one_result_line_per_input_line(client):
    lines = [
        {"question": Q1, "context": C1},
        {"inputs": {"question": Q2, "context": C2}},
        {"question": Q2, "context": C1},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\n"
    response = client.invoke(body, content_type="application/jsonlines")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/jsonlines")
    got = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert len(got) == 3
    assert_same_answers(got[0], single(client, Q1, C1))
    assert_same_answers(got[1], single(client, Q2, C2))
    assert_same_answers(got[2], single(client, Q2, C1))


def test_csv_with_header_row(client):
    body = f'question,context\n"{Q1}","{C1}"\n"{Q2}","{C2}"\n'
    response = client.invoke(body, content_type="text/csv; charset=utf-8", accept="application/json")
    assert response.status_code == 200, response.text
    assert_same_answers(response.json(), [single(client, Q1, C1), single(client, Q2, C2)])


def test_unknown_headers_are_ignored(client):
    response = client.invoke(
        {"inputs": {"question": Q1, "context": C1}},
        headers={"X-Something-Else": "1", "X-Amzn-SageMaker-Target-Model": "ignored.tar.gz", "Foo": "bar"},
    )
    assert response.status_code == 200, response.text
    assert_same_answers(response.json(), single(client, Q1, C1))


def test_custom_attributes_are_echoed(client):
    attributes = "trace_id=abc-123,accept_eula=true"
    headers = {"X-Amzn-SageMaker-Custom-Attributes": attributes}
    ok = client.invoke({"inputs": {"question": Q1, "context": C1}}, headers=headers)
    assert ok.status_code == 200
    assert ok.headers["X-Amzn-SageMaker-Custom-Attributes"] == attributes
    bad = client.invoke(b"{not json", headers=headers)
    assert_error(bad, 400)
    assert bad.headers["X-Amzn-SageMaker-Custom-Attributes"] == attributes
    plain = client.invoke({"inputs": {"question": Q1, "context": C1}})
    assert "X-Amzn-SageMaker-Custom-Attributes" not in plain.headers


def test_request_id_is_returned(client):
    response = client.invoke(
        {"inputs": {"question": Q1, "context": C1}}, headers={"X-Request-Id": "test-req-42"}
    )
    assert response.headers["X-Request-Id"] == "test-req-42"
    assert client.invoke({"inputs": {"question": Q1, "context": C1}}).headers["X-Request-Id"]


@pytest.mark.parametrize("case", GOLDEN, ids=[case["id"] for case in GOLDEN])
def test_golden_answers_over_http(client, case):
    response = client.invoke(case["request"])
    assert response.status_code == 200, response.text
    assert_same_answers(response.json(), case["expected"], case["id"])
