"""Every architecture we claim, answer for answer as transformers 4.57.6's QA pipeline.

The golden cases (tests/fixtures/golden/architectures.json, made by
tests/fixtures/make_golden_architectures.py in a 4.57.6 venv) run on every fp32 backend that
serves the architecture: each case alone, then all of a model's cases in one jsonlines request
with small forward batches, so windows of different lengths and cases are padded together.
Longformer's graph cannot serve (its windowed attention traces into a graph of one shape): it runs
on PyTorch, which `auto` falls back to, and the forced graph backends refuse it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import defaultdict

import pytest
from golden_cases import answers_equal, load_architecture_cases, model_dir

from qa import graphs as qa_graphs
from qa.errors import ModelLoadError
from qa.loading import load_model
from qa.options import QAOptions
from qa.request import parse_request, request_from_object

pytestmark = pytest.mark.slow  # every case of 12 models on 3 backends: ~1 min

CASES = load_architecture_cases()
BY_MODEL: dict[str, list[dict]] = defaultdict(list)
for _case in CASES:
    BY_MODEL[_case["model"]].append(_case)
NO_GRAPH = {"longformer-tiny"}  # served by PyTorch only
SERVED = sorted(BY_MODEL)  # the *-slow-tiny ones too: their tokenizer is converted at load


def load(name: str, backend: str, cache, **options):
    return load_model(model_dir(name), QAOptions(backend=backend, graph_cache=cache, **options))


def mismatches(model, cases: list[dict]) -> list[str]:
    wrong = []
    for case in cases:
        got = model.predict(request_from_object(case["request"], max_items=64))
        if isinstance(case["request"]["inputs"], list):
            got = list(got)
        if not answers_equal(got, case["expected"]):
            wrong.append(f"{case['id']}: got {got!r}, expected {case['expected']!r}")
    return wrong


def test_the_claimed_architectures_have_cases():
    architectures = {
        json.loads((model_dir(n) / "config.json").read_text())["architectures"][0] for n in SERVED
    }
    for claimed in (
        "BertForQuestionAnswering",
        "RobertaForQuestionAnswering",
        "XLMRobertaForQuestionAnswering",
        "AlbertForQuestionAnswering",
        "DebertaV2ForQuestionAnswering",
        "ElectraForQuestionAnswering",
        "XLNetForQuestionAnsweringSimple",
        "CamembertForQuestionAnswering",
        "LongformerForQuestionAnswering",
        "MobileBertForQuestionAnswering",
    ):
        assert claimed in architectures
    assert all(len(BY_MODEL[name]) >= 12 for name in SERVED)


# Longformer has no graph: test_a_graph_that_cannot_serve_is_never_used covers the graph backends.
RUNS = [
    (name, backend)
    for name in SERVED
    for backend in ("torch", "onnx", "openvino", "auto")
    if not (name in NO_GRAPH and backend in ("onnx", "openvino"))
]


@pytest.mark.parametrize("name,backend", RUNS)
def test_every_case_equals_the_reference(name, backend, tmp_path_factory):
    cache = tmp_path_factory.mktemp("graphs")
    model = load(name, backend, cache)
    assert mismatches(model, BY_MODEL[name]) == []
    # All cases in one request, padded together four windows at a time.
    body = "".join(json.dumps(c["request"]) + "\n" for c in BY_MODEL[name]).encode()
    request = parse_request(body, "application/jsonlines", max_items=1000)
    batched = load(name, backend, cache, forward_batch_size=4, max_windows_per_request=10_000)
    lines = batched.predict(request)
    wrong = [
        c["id"] for c, got in zip(BY_MODEL[name], lines) if not answers_equal(_plain(got), c["expected"])
    ]
    assert wrong == []


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, list) else value


def test_models_get_the_inputs_they_take(tmp_path):
    """ALBERT and XLNet take token_type_ids (their tokenizer classes in transformers 5 do not list
    them); DistilBERT has none; RoBERTa-family models take them but have one type."""
    for name, expected in (
        ("albert-tiny", ["input_ids", "attention_mask", "token_type_ids"]),
        ("xlnet-tiny", ["input_ids", "attention_mask", "token_type_ids"]),
        ("distilbert-tiny-s0", ["input_ids", "attention_mask"]),
    ):
        for backend in ("torch", "openvino"):
            assert sorted(load(name, backend, tmp_path).input_names) == sorted(expected), (name, backend)
    xlm = load("xlm-roberta-tiny", "torch", tmp_path)
    windows = xlm.windows.windows_for(
        request_from_object(BY_MODEL["xlm-roberta-tiny"][0]["request"], max_items=4), 99
    )
    assert not xlm.windows.uses_token_types and all(set(w.type_ids) == {0} for item in windows for w in item)


# ---- graphs that disagree with PyTorch ----------------------------------------------------------


def test_a_graph_that_cannot_serve_is_never_used(tmp_path, caplog, monkeypatch):
    """Longformer's graph fails at any shape but the traced one: auto serves PyTorch and says why;
    a forced graph backend refuses to start, naming the architecture and the backend."""
    with caplog.at_level(logging.WARNING, logger="qa.loading"):
        model = load("longformer-tiny", "auto", tmp_path)
    assert model.backend.name == "torch-fp32"
    assert "LongformerForQuestionAnswering" in caplog.text and "serving it with PyTorch fp32" in caplog.text
    # The refusal is remembered: other workers do not export again.
    monkeypatch.setattr(qa_graphs, "build_graph", lambda *a, **k: pytest.fail("exported again"))
    assert load("longformer-tiny", "auto", tmp_path).backend.name == "torch-fp32"
    for backend in ("onnx", "openvino"):
        with pytest.raises(ModelLoadError, match=rf"LongformerForQuestionAnswering.*QA_BACKEND={backend}"):
            load("longformer-tiny", backend, tmp_path)


def test_a_graph_whose_logits_differ_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(qa_graphs, "MAX_EXPORT_ERROR", -1.0)  # any difference, even 0, is too much
    with pytest.raises(ModelLoadError, match=r"DistilBertForQuestionAnswering.*largest logit difference"):
        load("distilbert-tiny-s0", "onnx", tmp_path / "forced")
    with caplog.at_level(logging.WARNING, logger="qa.loading"):
        model = load("distilbert-tiny-s0", "auto", tmp_path / "auto", precision="int8")
    assert model.backend.name == "torch-fp32"  # int8 needs a graph: PyTorch serves fp32
    assert "instead of openvino int8" in caplog.text or "instead of onnx int8" in caplog.text


def test_the_export_command_says_when_a_graph_cannot_serve(tmp_path, capsys):
    copy = tmp_path / "longformer"
    shutil.copytree(model_dir("longformer-tiny"), copy)
    assert qa_graphs.main(["export", str(copy), "--precision", "fp32"]) == 1
    err = capsys.readouterr().err
    assert "LongformerForQuestionAnswering" in err and "QA_BACKEND=torch" in err


# ---- models that are refused --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,why",
    [
        ({"architectures": ["BertForMaskedLM"]}, "no extractive question-answering head"),
        ({"architectures": ["BartForQuestionAnswering"], "is_encoder_decoder": True}, "encoder-decoder"),
        ({"auto_map": {"AutoModelForQuestionAnswering": "mine.MyQA"}}, "remote code"),
    ],
)
def test_models_no_backend_serves_are_refused_naming_their_architectures(tmp_path, change, why):
    copy = tmp_path / "model"
    shutil.copytree(model_dir("distilbert-tiny-s0"), copy)
    config = json.loads((copy / "config.json").read_text()) | change
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as raised:
        load_model(copy, QAOptions(backend="torch", graph_cache=tmp_path))
    message = str(raised.value)
    assert why in message and str(config["architectures"]) in message and "tested: ALBERT" in message
