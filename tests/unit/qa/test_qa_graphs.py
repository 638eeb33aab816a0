"""Graph making (qa/graphs.py) on the tiny fixture model: export, quantization, cache, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from qa import graph_files
from qa import graphs as qa_graphs
from qa.loading import load_windows

# In the whole suite, not in scripts/check (exports and quantizes graphs: ~7 s).
pytestmark = pytest.mark.slow

NAMES = ["input_ids", "attention_mask"]


@pytest.fixture(scope="module")
def windows(tiny):
    return load_windows(tiny[0])


def few_pairs():
    return qa_graphs.builtin_calibration_pairs()[:6]


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
    assert graph_files.graph_kind(backend, precision) == kind


def test_export_leaves_the_model_in_eval_mode(tiny, tmp_path):
    _, model = tiny
    qa_graphs.build_graph(model, load_windows(tiny[0]), "fp32", tmp_path / "g.onnx")
    assert not model.training and not any(m.training for m in model.modules())


def test_graph_is_made_once_then_reused(tiny, windows, tmp_path):
    path, model = tiny
    cache = tmp_path / "cache"
    first = qa_graphs.find_or_build_graph(model, path, windows, "int8-dynamic", cache)
    stamp = first.stat().st_mtime_ns
    again = qa_graphs.find_or_build_graph(model, path, windows, "int8-dynamic", cache)
    assert again == first and again.stat().st_mtime_ns == stamp
    fp32 = qa_graphs.find_or_build_graph(model, path, windows, "fp32", cache)
    static = qa_graphs.find_or_build_graph(model, path, windows, "int8-static", cache, few_pairs)
    assert len({first, fp32, static}) == 3
    made = sorted(p.suffix for p in cache.iterdir() if not p.name.endswith(".lock"))
    assert made == [".bin", ".onnx", ".onnx", ".xml"]  # the IR's weights beside its .xml; no leftovers


def test_the_key_follows_the_weights_and_the_kind(tiny, tmp_path):
    path, _ = tiny
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    assert graph_files.graph_key(copy, "fp32") == graph_files.graph_key(path, "fp32")
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b" ")
    assert graph_files.graph_key(copy, "fp32") != graph_files.graph_key(path, "fp32")
    keys = {graph_files.graph_key(path, kind) for kind in graph_files.GRAPH_KINDS}
    assert len(keys) == len(graph_files.GRAPH_KINDS)


def test_dynamic_int8_quantizes_the_encoder_but_not_the_answer_head(tiny, windows, tmp_path):
    import onnx

    _, model = tiny
    qa_graphs.build_graph(model, windows, "int8-dynamic", tmp_path / "int8.onnx")
    nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    assert sum(n.op_type == "MatMulInteger" for n in nodes) >= 12  # 6 linear layers x 2 blocks
    assert next(n.op_type for n in nodes if n.name.startswith("/model/qa_outputs/")) == "MatMul"


def test_static_int8_quantizes_the_encoder_but_not_the_answer_head(tiny, windows, tmp_path):
    import openvino as ov

    _, model = tiny
    out = tmp_path / "int8.xml"
    qa_graphs.build_graph(model, windows, "int8-static", out, few_pairs)
    graph = ov.Core().read_model(str(out))
    fake_quantize = [op for op in graph.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fake_quantize) >= 12  # activations and weights of the encoder's linear layers
    head = next(op for op in graph.get_ops() if op.get_friendly_name() == "/model/qa_outputs/MatMul")
    assert all(v.get_node().get_type_name() != "FakeQuantize" for v in head.input_values())
    # Float weights stay fp32 (save_model would compress them to fp16 by default).
    assert not any(
        op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in graph.get_ops()
    )


def test_static_int8_embeddings_stay_int8_and_answer_bit_for_bit_as_before(
    tiny, windows, tmp_path, monkeypatch
):
    """The rows of the int8 tables are gathered before they are scaled (qa/graphs.py), so the CPU
    plugin cannot fold a table into fp32; the logits are those of the graph as NNCF made it."""
    import openvino as ov

    from qa.windows import example_inputs

    _, model = tiny
    qa_graphs.build_graph(model, windows, "int8-static", tmp_path / "rows.xml", few_pairs)
    monkeypatch.setattr(qa_graphs, "_gather_rows_before_dequantizing", lambda graph: None)
    qa_graphs.build_graph(model, windows, "int8-static", tmp_path / "tables.xml", few_pairs)

    core = ov.Core()
    graph = core.read_model(str(tmp_path / "rows.xml"))
    tables = [
        op.input_value(0).get_node()
        for op in graph.get_ops()
        if op.get_type_name() == "Gather" and op.get_friendly_name().endswith("_embeddings/Gather/int8_rows")
    ]
    assert len(tables) == 2, tables  # the words' and the positions'
    assert all(t.get_type_name() == "Constant" and t.get_element_type() == ov.Type.i8 for t in tables), tables

    inputs = example_inputs(windows, NAMES, (32, 64))
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    logits = [
        core.compile_model(str(tmp_path / name), "CPU", config)(inputs) for name in ("rows.xml", "tables.xml")
    ]
    for a, b in zip(logits[0].values(), logits[1].values(), strict=True):
        assert np.array_equal(a, b)


def test_calibration_windows_are_cut_as_serving_cuts_them(windows):
    pairs = [("Who?", "word " * 1000), ("Where?", "Ada lives in Paris.")]
    inputs = qa_graphs.calibration_inputs(windows, NAMES, pairs, count=100)
    assert len(inputs) > 3  # the long context gives several windows
    assert all(set(w) == set(NAMES) and w["input_ids"].shape[0] == 1 for w in inputs)
    assert max(w["input_ids"].shape[1] for w in inputs) == qa_graphs.CALIBRATION_MAX_SEQ_LEN
    assert len(qa_graphs.calibration_inputs(windows, NAMES, pairs, count=2)) == 2


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
    for kind in graph_files.GRAPH_KINDS:
        found = graph_files.find_graph(baked, kind, tmp_path / "cache")
        assert found is not None and found.parent == baked / "graphs"


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
