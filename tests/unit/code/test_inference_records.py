"""QA_JSONLINES_ERRORS=record: a bad jsonlines record answers alone, on its own output line, and
the others are served; the default stays one 400 naming the line."""

from __future__ import annotations

import json
import types

import inference
import pytest

from qa.errors import InvalidRequest
from serving.settings import Settings

GOOD = {"inputs": {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843."}}
LONG = {"inputs": {"question": "Who?", "context": " ".join(["word"] * 3000)}}


def run(qa_model, lines: list[bytes], **settings) -> list[dict]:
    context = types.SimpleNamespace(
        settings=Settings(backend="torch", **settings), request_id=None, custom_attributes=None, deadline=None
    )
    data = inference.input_fn(b"\n".join(lines), "application/jsonlines", context)
    body, content_type = inference.output_fn(inference.predict_fn(data, qa_model, context), None, context)
    assert content_type == "application/jsonlines"
    return [json.loads(line) for line in body.decode().splitlines()]


def test_by_default_a_bad_line_fails_the_request_naming_it(qa_model):
    with pytest.raises(InvalidRequest, match="line 2"):
        run(qa_model, [json.dumps(GOOD).encode(), b"{not json", json.dumps(GOOD).encode()])


def test_per_record_a_bad_line_gets_an_error_line_and_the_others_their_answers(qa_model):
    good = run(qa_model, [json.dumps(GOOD).encode()])[0]
    out = run(
        qa_model,
        [json.dumps(GOOD).encode(), b"{not json", b'{"inputs": {"question": 3}}', json.dumps(GOOD).encode()],
        jsonlines_errors="record",
    )
    assert len(out) == 4 and out[0] == good and out[3] == good
    assert out[1]["error"]["type"] == "InvalidRequest" and out[1]["error"]["message"].startswith(
        "line 2: malformed JSON"
    )
    assert set(out[2]) == {"error"} and "question" in out[2]["error"]["message"]


def test_per_record_a_line_over_the_window_budget_is_refused_alone(qa_model):
    out = run(
        qa_model,
        [json.dumps(GOOD).encode(), json.dumps(LONG).encode(), json.dumps(GOOD).encode()],
        jsonlines_errors="record",
        max_windows_per_request=8,
    )
    assert out[0] == out[2] and "answer" in out[0]
    assert (
        out[1]["error"]["type"] == "RequestTooLarge"
        and "QA_MAX_WINDOWS_PER_REQUEST" in out[1]["error"]["message"]
    )


def test_the_setting_names_its_values():
    with pytest.raises(ValueError, match="QA_JSONLINES_ERRORS"):
        Settings(jsonlines_errors="line")
