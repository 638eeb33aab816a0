"""Graph making (qa/graphs.py) on the tiny fixture model: export, quantization, cache, CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from qa import graphs as qa_graphs

# In the whole suite, not in scripts/check (exports and quantizes graphs: ~7 s).
pytestmark = pytest.mark.slow

NAMES = ["input_ids", "attention_mask"]


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny[0], local_files_only=True)


def few_windows(tokenizer):
    return lambda: qa_graphs.calibration_inputs(tokenizer, NAMES, qa_graphs.builtin_calibration_pairs()[:6])


@pytest.mark.parametrize(
    "backend,precision,kind",
    [
        ("torch", "fp32", None),
        ("torch", "bf16", None),
        ("onnx", "fp32", "fp32"),
        ("onnx", "int8", "int8-dynamic"),
        ("openvino", "fp32", "fp32"),
        ("openvino", "bf16", "fp32"),
        ("openvino", "int8", "int8-static"),
    ],
)
def test_each_backend_runs_its_kind_of_graph(backend, precision, kind):
    assert qa_graphs.graph_kind(backend, precision) == kind


def test_export_leaves_the_model_in_eval_mode(tiny, tmp_path):
    _, model = tiny
    qa_graphs.build_graph(model, NAMES, "fp32", tmp_path / "g.onnx")
    assert not model.training and not any(m.training for m in model.modules())


def test_graph_is_made_once_then_reused(tiny, tokenizer, tmp_path):
    path, model = tiny
    cache = tmp_path / "cache"
    first = qa_graphs.find_or_build_graph(model, path, NAMES, "int8-dynamic", cache)
    stamp = first.stat().st_mtime_ns
    again = qa_graphs.find_or_build_graph(model, path, NAMES, "int8-dynamic", cache)
    assert again == first and again.stat().st_mtime_ns == stamp
    fp32 = qa_graphs.find_or_build_graph(model, path, NAMES, "fp32", cache)
    static = qa_graphs.find_or_build_graph(model, path, NAMES, "int8-static", cache, few_windows(tokenizer))
    assert len({first, fp32, static}) == 3
    made = sorted(p.suffix for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert made == [".bin", ".onnx", ".onnx", ".xml"]  # the IR's weights beside its .xml; no leftovers


def test_the_key_follows_the_weights_and_the_kind(tiny, tmp_path):
    path, _ = tiny
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    assert qa_graphs.graph_key(copy, "fp32", NAMES) == qa_graphs.graph_key(path, "fp32", NAMES)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b" ")
    assert qa_graphs.graph_key(copy, "fp32", NAMES) != qa_graphs.graph_key(path, "fp32", NAMES)
    keys = {qa_graphs.graph_key(path, kind, NAMES) for kind in qa_graphs.GRAPH_KINDS}
    assert len(keys) == len(qa_graphs.GRAPH_KINDS)


def test_dynamic_int8_quantizes_the_encoder_but_not_the_answer_head(tiny, tmp_path):
    import onnx

    _, model = tiny
    qa_graphs.build_graph(model, NAMES, "int8-dynamic", tmp_path / "int8.onnx")
    nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    assert sum(n.op_type == "MatMulInteger" for n in nodes) >= 12  # 6 linear layers x 2 blocks
    assert next(n.op_type for n in nodes if n.name.startswith("/model/qa_outputs/")) == "MatMul"


def test_static_int8_quantizes_the_encoder_but_not_the_answer_head(tiny, tokenizer, tmp_path):
    import openvino as ov

    _, model = tiny
    out = tmp_path / "int8.xml"
    qa_graphs.build_graph(model, NAMES, "int8-static", out, few_windows(tokenizer))
    graph = ov.Core().read_model(str(out))
    fake_quantize = [op for op in graph.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fake_quantize) >= 12  # activations and weights of the encoder's linear layers
    head = next(op for op in graph.get_ops() if op.get_friendly_name() == "/model/qa_outputs/MatMul")
    assert all(v.get_node().get_type_name() != "FakeQuantize" for v in head.input_values())
    # Float weights stay fp32 (save_model would compress them to fp16 by default).
    assert not any(
        op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in graph.get_ops()
    )


def test_calibration_windows_are_cut_as_serving_cuts_them(tokenizer):
    pairs = [("Who?", "word " * 1000), ("Where?", "Ada lives in Paris.")]
    windows = qa_graphs.calibration_inputs(tokenizer, NAMES, pairs, count=100)
    assert len(windows) > 3  # the long context gives several windows
    assert all(set(w) == set(NAMES) and w["input_ids"].shape[0] == 1 for w in windows)
    assert max(w["input_ids"].shape[1] for w in windows) == qa_graphs.CALIBRATION_MAX_SEQ_LEN
    assert len(qa_graphs.calibration_inputs(tokenizer, NAMES, pairs, count=2)) == 2


def test_built_in_calibration_never_sees_the_benchmark_requests():
    from qa.corpus import make_requests

    measured = {(r.question, r.context) for r in make_requests(400)}
    calibration = qa_graphs.builtin_calibration_pairs()
    assert len(calibration) == qa_graphs.CALIBRATION_WINDOWS
    assert not measured & set(calibration)


def test_cli_export_makes_the_graphs_that_start_up_uses(tiny, tmp_path):
    path, _ = tiny
    baked = tmp_path / "model"
    shutil.copytree(path, baked)
    assert qa_graphs.main(["export", str(baked), "--precision", "fp32", "int8"]) == 0
    made = sorted(p.name.split("-")[1] for p in (baked / "graphs").glob("qa-*") if p.suffix != ".bin")
    assert made == ["fp32", "int8", "int8"]  # fp32, int8-dynamic, int8-static
    choices = qa_graphs.input_name_choices(["input_ids", "attention_mask"])
    for kind in qa_graphs.GRAPH_KINDS:
        found = qa_graphs.find_graph(baked, choices, kind, tmp_path / "cache")
        assert found is not None and found[0].parent == baked / "graphs"


def test_cli_calibrates_on_the_users_samples(tiny, tmp_path, monkeypatch):
    path, _ = tiny
    baked = tmp_path / "model"
    shutil.copytree(path, baked)
    samples = tmp_path / "samples.jsonl"
    lines = [
        {"inputs": {"question": "Who?", "context": "Ada wrote it."}},
        {"question": "When?", "context": "In 1843."},
    ]
    samples.write_text("".join(json.dumps(line) + "\n" for line in lines))
    seen = []
    quantize = qa_graphs.quantize_static_int8

    def spy(src, dst, calibration):
        seen.extend(calibration)
        return quantize(src, dst, calibration)

    monkeypatch.setattr(qa_graphs, "quantize_static_int8", spy)
    assert qa_graphs.main(["export", str(baked), "--precision", "int8", "--samples", str(samples)]) == 0
    assert len(seen) == 2  # one window per sample line, not the built-in corpus


def test_cli_refuses_bad_samples(tiny, tmp_path, capsys):
    path, _ = tiny
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"question": "Who?"}\n')
    assert qa_graphs.main(["export", str(path), str(tmp_path / "out"), "--samples", str(samples)]) == 2
    err = capsys.readouterr().err
    assert "--samples" in err and "context" in err


def test_input_name_choices_cover_what_any_model_would_take():
    """Finding a graph without the model: every input list model_input_names could give."""
    choices = qa_graphs.input_name_choices(["input_ids", "token_type_ids", "attention_mask"])
    assert choices[0] == ["input_ids", "token_type_ids", "attention_mask"]  # the likeliest first
    assert sorted(map(tuple, choices)) == sorted(
        [
            ("input_ids", "token_type_ids", "attention_mask"),
            ("input_ids", "token_type_ids"),
            ("input_ids", "attention_mask"),
            ("input_ids",),
        ]
    )
    assert qa_graphs.input_name_choices(["input_ids", "attention_mask"]) == [
        ["input_ids", "attention_mask"],
        ["input_ids"],
    ]


def test_a_graph_is_found_by_its_weights_whatever_inputs_it_takes(tiny, tmp_path):
    path, _ = tiny
    baked = tmp_path / "model"
    shutil.copytree(path, baked)
    assert qa_graphs.main(["export", str(baked), "--precision", "fp32"]) == 0
    choices = qa_graphs.input_name_choices(["input_ids", "token_type_ids", "attention_mask"])
    found = qa_graphs.find_graph(baked, choices, "fp32", tmp_path / "cache")
    assert found is not None and found[1] == NAMES and found[0].parent == baked / "graphs"
    assert qa_graphs.find_graph(baked, choices, "int8-static", tmp_path / "cache") is None
