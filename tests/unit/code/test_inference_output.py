"""output_fn: Accept negotiation and the JSON / jsonlines bodies; the full hook chain per content type."""

from __future__ import annotations

import json

import inference
import numpy as np
import pytest

from qa.errors import UnsupportedAccept
from qa.request import BatchResults, LineResults
from serving.errors import error_response

ANSWER = {"score": 0.5, "start": 4, "end": 9, "answer": "Café 東京 🙂"}


def encode(prediction, accept):
    body, content_type = inference.output_fn(prediction, accept)
    assert isinstance(body, bytes)
    return body.decode("utf-8"), content_type


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "",
        "*/*",
        "application/*",
        "application/json",
        "application/json; charset=utf-8",
        "text/html, application/json;q=0.5",
        "application/jsonlines;q=0.4, application/json;q=0.9",
        "text/html;q=1, */*;q=0.1",
        "APPLICATION/JSON",
    ],
)
def test_json_responses(accept):
    body, content_type = encode(ANSWER, accept)
    assert content_type == "application/json"
    assert json.loads(body) == ANSWER
    assert "東京" in body  # UTF-8, not \\u escapes


@pytest.mark.parametrize(
    "accept",
    [
        "application/jsonlines",
        "application/x-jsonlines",
        "application/json;q=0, */*",
        "application/json;q=0.2, application/jsonlines",
        "application/json;q=0.5, application/*",
    ],
)
def test_jsonlines_responses(accept):
    body, content_type = encode(BatchResults([ANSWER, [ANSWER, ANSWER]]), accept)
    assert content_type == "application/jsonlines"
    assert body.endswith("\n")
    assert [json.loads(line) for line in body.splitlines()] == [ANSWER, [ANSWER, ANSWER]]


def test_jsonlines_of_a_single_result_is_one_line_even_for_a_top_k_list():
    body, _ = encode([ANSWER, ANSWER], "application/jsonlines")
    assert body.splitlines() == [json.dumps([ANSWER, ANSWER], ensure_ascii=False, separators=(",", ":"))]


def test_line_results_default_to_jsonlines_but_honour_accept():
    lines = LineResults([ANSWER, BatchResults([ANSWER])])
    body, content_type = encode(lines, None)
    assert content_type == "application/jsonlines"
    assert [json.loads(line) for line in body.splitlines()] == [ANSWER, [ANSWER]]
    assert encode(lines, "*/*")[1] == "application/jsonlines"
    body, content_type = encode(lines, "application/json")
    assert content_type == "application/json" and json.loads(body) == [ANSWER, [ANSWER]]


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "text/csv",
        "application/xml",
        "image/*",
        "application/json;q=0",
        "application/json;q=0, application/jsonlines;q=0",
    ],
)
def test_unsupported_accept_is_406_naming_the_supported_types(accept):
    with pytest.raises(UnsupportedAccept) as caught:
        inference.output_fn(ANSWER, accept)
    assert error_response(caught.value)[0] == 406
    assert accept in caught.value.message
    assert "application/json" in caught.value.message and "application/jsonlines" in caught.value.message


def test_custom_predictions_with_numpy_values_are_encoded():
    body, _ = encode({"score": np.float32(0.25), "ids": np.arange(3)}, None)
    assert json.loads(body) == {"score": 0.25, "ids": [0, 1, 2]}


# ---- the whole chain, per request content type ----------------------------------------------------

ITEM = {
    "question": "Who designed the lighthouse?",
    "context": "The first stone lighthouse, designed by the engineer Matthias Oort, was completed in 1711.",
}


def chain(model, body: bytes, content_type, accept=None):
    prediction = inference.predict_fn(inference.input_fn(body, content_type), model)
    return inference.output_fn(prediction, accept)


def test_jsonlines_in_gives_one_line_per_input_line_in_order(qa_model):
    requests = [{"inputs": ITEM}, {"inputs": [ITEM, ITEM]}, {**ITEM, "parameters": {"top_k": 2}}]
    body = "".join(json.dumps(r) + "\n" for r in requests).encode()
    out, content_type = chain(qa_model, body, "application/jsonlines")
    assert content_type == "application/jsonlines"
    lines = [json.loads(line) for line in out.decode().splitlines()]
    single = json.loads(chain(qa_model, json.dumps({"inputs": ITEM}).encode(), "application/json")[0])
    assert lines[0] == single
    assert lines[1] == [single, single]
    assert isinstance(lines[2], list) and len(lines[2]) == 2 and lines[2][0] == single


def test_csv_in_gives_a_json_list(qa_model):
    body = ("question,context\n" + f'"{ITEM["question"]}","{ITEM["context"]}"\n' * 2).encode()
    out, content_type = chain(qa_model, body, "text/csv")
    single = json.loads(chain(qa_model, json.dumps(ITEM).encode(), None)[0])
    assert content_type == "application/json"
    assert json.loads(out) == [single, single]


def test_json_batch_as_jsonlines(qa_model):
    body = json.dumps({"inputs": [ITEM, ITEM]}).encode()
    out, content_type = chain(qa_model, body, "application/json", "application/jsonlines")
    assert content_type == "application/jsonlines"
    assert len(out.decode().splitlines()) == 2
