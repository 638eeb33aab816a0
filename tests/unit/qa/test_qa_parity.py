"""Answer-for-answer parity with the transformers 4.57.6 QuestionAnsweringPipeline.

The golden cases (tests/fixtures/golden/cases.json, made by tests/fixtures/make_golden.py in a
4.57.6 venv) run through input_fn -> predict_fn -> output_fn one by one, then all cases of the
same model and parameters together in one batched request, also with a forward batch of 3
windows so windows of different lengths are padded together, and all cases at once from many
threads, so the worker's batcher pads windows of different requests together. Every test runs on
the exact backends: PyTorch fp32 and ONNX Runtime fp32.
"""

from __future__ import annotations

import json
import threading
import types
from collections import defaultdict
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

import inference  # noqa: E402
from golden_answers import assert_same_answers  # noqa: E402
from golden_cases import load_cases, model_dir  # noqa: E402

from serving.settings import Settings  # noqa: E402

# In the whole suite, not in scripts/check (every golden case on every fp32 backend: ~25 s).
pytestmark = pytest.mark.slow

CASES = load_cases()


EXACT_BACKENDS = [Settings(backend=name, precision="fp32") for name in ("torch", "onnx", "openvino")]


@pytest.fixture(scope="module", params=EXACT_BACKENDS, ids=lambda s: f"{s.backend}-{s.precision}")
def models(request, tmp_path_factory):
    settings = Settings(
        backend=request.param.backend,
        precision=request.param.precision,
        graph_cache_dir=tmp_path_factory.mktemp("graphs"),
        batch_wait_ms=20,  # long enough for the concurrent test's requests to meet in the batcher
    )
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = inference.model_fn(model_dir(name), types.SimpleNamespace(settings=settings))
        return loaded[name]

    yield get


def run(model, request: dict, settings: Settings | None = None):
    context = types.SimpleNamespace(settings=settings or Settings(), request_id=None, custom_attributes=None)
    data = inference.input_fn(json.dumps(request).encode("utf-8"), "application/json", context)
    prediction = inference.predict_fn(data, model, context)
    body, content_type = inference.output_fn(prediction, "application/json", context)
    assert content_type == "application/json"
    return json.loads(body)


def test_there_are_enough_cases():
    assert len(CASES) >= 40
    assert len({c["model"] for c in CASES}) >= 2


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_one_by_one(case, models):
    assert_same_answers(run(models(case["model"]), case["request"]), case["expected"], case["id"])


def batched_groups() -> list[tuple[str, str, list, list]]:
    """All inputs of the same model and parameters, with their expected answers, in case order."""
    groups: dict[tuple[str, str], tuple[list, list]] = defaultdict(lambda: ([], []))
    for case in CASES:
        request = case["request"]
        inputs, expected = request["inputs"], case["expected"]
        if not isinstance(inputs, list):
            inputs, expected = [inputs], [expected]
        key = (case["model"], json.dumps(request.get("parameters", {}), sort_keys=True))
        groups[key][0].extend(inputs)
        groups[key][1].extend(expected)
    return [(model, params, inputs, expected) for (model, params), (inputs, expected) in groups.items()]


GROUPS = batched_groups()


@pytest.mark.parametrize("forward_batch_size", [16, 3])
@pytest.mark.parametrize("group", GROUPS, ids=[f"{g[0]}-{g[1]}" for g in GROUPS])
def test_cases_batched_together(group, forward_batch_size, models):
    model_name, params, inputs, expected = group
    request = {"inputs": inputs, "parameters": json.loads(params)}
    settings = Settings(forward_batch_size=forward_batch_size)
    assert_same_answers(run(models(model_name), request, settings), expected, f"{model_name} {params}")


def test_every_case_in_one_request_per_model(models):
    """Different parameters in one jsonlines request: one forward pass plan, answers unchanged."""
    by_model = defaultdict(list)
    for case in CASES:
        by_model[case["model"]].append(case)
    for name, cases in by_model.items():
        body = "".join(json.dumps(c["request"]) + "\n" for c in cases).encode("utf-8")
        context = types.SimpleNamespace(settings=Settings(forward_batch_size=5))
        model = models(name)
        prediction = inference.predict_fn(
            inference.input_fn(body, "application/jsonlines", context), model, context
        )
        out, content_type = inference.output_fn(prediction, None, context)
        assert content_type == "application/jsonlines"
        lines = out.decode("utf-8").splitlines()
        assert len(lines) == len(cases)
        for line, case in zip(lines, cases):
            assert_same_answers(json.loads(line), case["expected"], case["id"])


def test_every_case_at_once_from_many_threads(models):
    """Requests that meet in the worker's batcher: padded together, answers unchanged."""
    cases = sorted(CASES, key=lambda c: c["model"])
    for name in {c["model"] for c in cases}:
        models(name)  # load before the clock starts
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def client(case) -> None:
        try:
            results[case["id"]] = run(models(case["model"]), case["request"])
        except BaseException as exc:  # reported below, with the case
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(case,)) for case in cases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    for case in cases:
        assert_same_answers(results[case["id"]], case["expected"], case["id"])
