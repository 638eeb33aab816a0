"""Batch Transform (SAGEMAKER_BATCH): a jsonlines mini-batch of any size within the payload limit
streams through the batcher a chunk of records at a time, one answer line per record, in order;
a bad record answers alone; the budget and /execution-parameters follow the job, not real-time
defaults."""

from __future__ import annotations

import json
import types

import inference
import pytest
from golden_cases import answers_equal

from qa import model as qa_model_module
from qa.corpus import make_requests
from serving.settings import Settings, batch_payload_mb

BATCH_ENV = {"SAGEMAKER_BATCH": "True"}  # what the SDK's local mode sets (SageMaker: "true")


def run(model, body: bytes, settings: Settings) -> list[dict]:
    context = types.SimpleNamespace(settings=settings, deadline=None)
    data = inference.input_fn(body, "application/jsonlines", context)
    out, content_type = inference.output_fn(inference.predict_fn(data, model, context), None, context)
    assert content_type == "application/jsonlines"
    return [json.loads(line) for line in out.decode().splitlines()]


def records(count: int) -> list[str]:
    return [json.dumps({"question": r.question, "context": r.context}) for r in make_requests(count)]


def test_batch_transform_settings_follow_the_job():
    settings = Settings.from_env(BATCH_ENV, cpu_limit=2)
    assert settings.batch_transform and settings.qa.batch_transform
    assert settings.request_timeout_s == 600 and settings.jsonlines_errors == "record"
    explicit = Settings.from_env(
        {
            "SAGEMAKER_BATCH": "true",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1800",
            "QA_JSONLINES_ERRORS": "request",
        },
        cpu_limit=2,
    )
    assert (explicit.request_timeout_s, explicit.jsonlines_errors) == (1800, "request")
    real_time = Settings.from_env({}, cpu_limit=2)
    assert not real_time.batch_transform and real_time.request_timeout_s == 60
    assert real_time.jsonlines_errors == "request"


@pytest.mark.parametrize(
    "precision, cpu_class, cpus, expected",
    [
        ("fp32", "avx512", 2, 2),
        ("bf16", "avx512", 2, 5),
        ("int8", "avx512", 2, 6),
        ("fp32", "avx2", 2, 1),
        ("fp32", "avx512", 8, 5),
    ],
)
def test_the_advertised_mini_batch_fits_half_the_invocation_budget(precision, cpu_class, cpus, expected):
    settings = Settings.from_env({**BATCH_ENV, "QA_PRECISION": precision}, cpu_limit=cpus)
    assert batch_payload_mb(settings, cpu_class) == expected
    assert batch_payload_mb(Settings.from_env({"QA_PRECISION": precision}, cpu_limit=cpus), cpu_class) == 6


def test_a_mini_batch_over_the_real_time_item_limit_streams_in_chunks(qa_model, monkeypatch):
    """2,000 records (the real-time limit is 64 items), one bad line: every line answered in order,
    the bad one alone; the batcher never sees more than a chunk; answers equal the real-time ones."""
    settings = Settings.from_env(BATCH_ENV, cpu_limit=2)
    lines = records(2000)
    lines.insert(7, '{"question": ""}')
    seen = []
    submit = qa_model.batcher.submit

    def spy(windows, *args, **kwargs):
        seen.append(len(windows))
        return submit(windows, *args, **kwargs)

    monkeypatch.setattr(qa_model.batcher, "submit", spy)
    answers = run(qa_model, ("\n".join(lines) + "\n").encode(), settings)
    assert len(answers) == 2001
    assert "body.question is empty" in answers[7]["error"]["message"]
    assert all("answer" in a for i, a in enumerate(answers) if i != 7)
    assert len(seen) >= 2000 // qa_model_module.STREAM_RECORDS
    assert max(seen) <= qa_model_module.STREAM_RECORDS * 3  # a chunk's windows, never the request's
    monkeypatch.setattr(qa_model.batcher, "submit", submit)
    real_time = Settings.from_env({"QA_JSONLINES_ERRORS": "record"}, cpu_limit=2)
    for start in (0, 900, 1950):
        sample = [line for line in lines[start : start + 40] if '""' not in line]
        want = run(qa_model, ("\n".join(sample) + "\n").encode(), real_time)
        got = [a for i, a in enumerate(answers[start : start + 40]) if i + start != 7]
        assert all(map(answers_equal, got, want))  # other batch neighbours: scores within 1e-4


def test_the_real_time_limit_still_protects_real_time_endpoints(qa_model):
    from qa.errors import RequestTooLarge

    body = ("\n".join(records(65)) + "\n").encode()
    context = types.SimpleNamespace(settings=Settings.from_env({}, cpu_limit=2), deadline=None)
    with pytest.raises(RequestTooLarge, match="64"):
        inference.input_fn(body, "application/jsonlines", context)
