"""Inference backends (code/qa_backends.py) on the tiny fixture model: settings, logits, ONNX export and cache."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))

import qa_backends  # noqa: E402
from golden_cases import model_dir  # noqa: E402

from serving.settings import Settings, SettingsError  # noqa: E402

COMBOS = [("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8")]
NAMES = ["input_ids", "attention_mask"]


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForQuestionAnswering

    path = model_dir("distilbert-tiny-s0")
    return path, AutoModelForQuestionAnswering.from_pretrained(path, local_files_only=True).eval()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def backend_for(tiny, cache_dir, backend, precision):
    path, model = tiny
    settings = Settings(backend=backend, precision=precision, onnx_cache_dir=cache_dir, torch_threads=1)
    return qa_backends.create_backend(model, path, NAMES, settings)


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,precision", COMBOS)
def test_supported_combinations_parse(backend, precision):
    settings = Settings.from_env({"QA_BACKEND": backend, "QA_PRECISION": precision}, cpu_limit=2)
    assert (settings.backend, settings.precision) == (backend, precision)


def test_defaults_are_onnx_fp32():
    settings = Settings.from_env({}, cpu_limit=2)
    assert (settings.backend, settings.precision, settings.onnx_cache_dir) == ("onnx", "fp32", None)


@pytest.mark.parametrize("backend,precision", [("torch", "int8"), ("onnx", "bf16")])
def test_nonsense_combinations_name_both_variables(backend, precision):
    with pytest.raises(SettingsError, match=f"QA_PRECISION={precision}.*QA_BACKEND={backend}"):
        Settings.from_env({"QA_BACKEND": backend, "QA_PRECISION": precision}, cpu_limit=2)
    with pytest.raises(qa_backends.BackendError, match="QA_BACKEND"):
        qa_backends.check_combination(backend, precision)


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert qa_backends.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512_vnni"}
    assert qa_backends.cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize(
    "precision,flags,warned",
    [
        ("bf16", {"avx2"}, "bf16 instructions"),
        ("bf16", {"avx2", "avx512_bf16"}, None),
        ("bf16", {"amx_bf16"}, None),
        ("int8", {"avx2"}, "without VNNI"),
        ("int8", {"avx2", "avx512_vnni"}, None),
        ("fp32", {"avx2"}, None),
        ("bf16", set(), None),  # flags unknown (not Linux): say nothing rather than guess
    ],
)
def test_cpu_warning_for_precisions_the_cpu_lacks(caplog, precision, flags, warned):
    with caplog.at_level("WARNING", logger=qa_backends.log.name):
        qa_backends.check_cpu(precision, flags)
    messages = [r.getMessage() for r in caplog.records]
    if warned:
        assert len(messages) == 1 and warned in messages[0] and f"QA_PRECISION={precision}" in messages[0]
    else:
        assert messages == []


@pytest.mark.parametrize(
    "env",
    [
        {"QA_BACKEND": "tensorrt"},
        {"QA_PRECISION": "fp16"},
        {"QA_BATCH_WAIT_MS": "-1"},
        {"QA_BATCH_MAX_TOKENS": "0"},
    ],
)
def test_malformed_values_are_refused(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env, cpu_limit=2)


def test_batching_and_cache_settings_parse():
    settings = Settings.from_env(
        {
            "QA_ONNX_CACHE_DIR": "/var/cache/qa",
            "QA_BATCH_WAIT_MS": "0",
            "QA_BATCH_MAX_TOKENS": "2048",
            "QA_BATCH_QUEUE_WINDOWS": "64",
        },
        cpu_limit=2,
    )
    assert settings.onnx_cache_dir == Path("/var/cache/qa")
    assert (settings.batch_wait_ms, settings.batch_max_tokens, settings.batch_queue_windows) == (0, 2048, 64)


# ---- logits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,precision", COMBOS)
def test_every_backend_gives_float32_logits_per_token(tiny, cache_dir, backend, precision):
    b = backend_for(tiny, cache_dir, backend, precision)
    assert b.name == f"{backend}-{precision}"
    start, end = b.forward(qa_backends.example_inputs(NAMES, 3, 21))
    assert start.shape == end.shape == (3, 21)
    assert start.dtype == end.dtype == np.float32
    assert np.isfinite(start).all() and np.isfinite(end).all()


@pytest.mark.parametrize("batch,width", [(1, 5), (3, 40), (8, 384)])
def test_onnx_fp32_matches_torch_fp32(tiny, cache_dir, batch, width):
    inputs = qa_backends.example_inputs(NAMES, batch, width, seed=batch)
    want = backend_for(tiny, cache_dir, "torch", "fp32").forward(inputs)
    got = backend_for(tiny, cache_dir, "onnx", "fp32").forward(inputs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend,precision", [("torch", "bf16"), ("onnx", "int8")])
def test_reduced_precision_stays_near_fp32(tiny, cache_dir, backend, precision):
    inputs = qa_backends.example_inputs(NAMES, 2, 64, seed=5)
    want = backend_for(tiny, cache_dir, "torch", "fp32").forward(inputs)
    got = backend_for(tiny, cache_dir, backend, precision).forward(inputs)
    for g, w in zip(got, want):
        mask = inputs["attention_mask"] == 1
        assert np.corrcoef(g[mask], w[mask])[0, 1] > 0.95


# ---- export and cache -------------------------------------------------------------------------


def test_export_leaves_the_model_in_eval_mode(tiny, tmp_path):
    _, model = tiny
    qa_backends.build_graph(model, NAMES, "fp32", tmp_path / "g.onnx")
    assert not model.training and not any(m.training for m in model.modules())


def test_graph_is_exported_once_then_reused(tiny, tmp_path):
    path, model = tiny
    cache = tmp_path / "cache"
    first = qa_backends.find_or_build_graph(model, path, NAMES, "int8", cache)
    stamp = first.stat().st_mtime_ns
    again = qa_backends.find_or_build_graph(model, path, NAMES, "int8", cache)
    assert again == first and again.stat().st_mtime_ns == stamp
    fp32 = qa_backends.find_or_build_graph(model, path, NAMES, "fp32", cache)
    assert fp32 != first
    assert sorted(p.suffix for p in cache.iterdir() if not p.name.endswith(".lock")) == [".onnx", ".onnx"]


def test_the_key_follows_the_weights(tiny, tmp_path):
    path, _ = tiny
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    assert qa_backends.graph_key(copy, "fp32", NAMES) == qa_backends.graph_key(path, "fp32", NAMES)
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b" ")
    assert qa_backends.graph_key(copy, "fp32", NAMES) != qa_backends.graph_key(path, "fp32", NAMES)
    assert qa_backends.graph_key(path, "int8", NAMES) != qa_backends.graph_key(path, "fp32", NAMES)


def test_cli_export_bakes_graphs_that_start_up_uses(tiny, tmp_path):
    path, model = tiny
    baked = tmp_path / "model"
    shutil.copytree(path, baked)
    assert qa_backends.main(["export", str(baked), "--precision", "fp32", "int8"]) == 0
    assert len(list((baked / "onnx").glob("qa-*.onnx"))) == 2
    cache = tmp_path / "cache"
    settings = Settings(backend="onnx", precision="int8", onnx_cache_dir=cache)
    backend = qa_backends.create_backend(model, baked, NAMES, settings)
    assert backend.path.parent == baked / "onnx"
    assert not cache.exists()  # nothing exported at start-up


def test_int8_quantizes_the_encoder_but_not_the_answer_head(tiny, tmp_path):
    import onnx

    _, model = tiny
    qa_backends.build_graph(model, NAMES, "int8", tmp_path / "int8.onnx")
    nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    assert sum(n.op_type == "MatMulInteger" for n in nodes) >= 12  # 6 linear layers x 2 blocks
    assert next(n.op_type for n in nodes if n.name.startswith("/model/qa_outputs/")) == "MatMul"


@pytest.mark.parametrize(
    "backend,cpus,threads", [("torch", 2.0, 1), ("onnx", 2.0, 1), ("torch", 8.0, 4), ("onnx", 8.0, 4)]
)
def test_default_threads_split_the_cpus_between_workers(backend, cpus, threads):
    settings = Settings.from_env(
        {"QA_BACKEND": backend, "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, cpu_limit=cpus
    )
    assert settings.torch_threads == threads
    explicit = Settings.from_env({"QA_BACKEND": backend, "QA_TORCH_THREADS": "3"}, cpu_limit=cpus)
    assert explicit.torch_threads == 3


FORK_SCRIPT = """
import gc, os, signal, sys
sys.path[:0] = sys.argv[2:]
import qa_backends
backend = qa_backends.OnnxBackend(sys.argv[1], "fp32", threads=2)
inputs = qa_backends.example_inputs(["input_ids", "attention_mask"], 2, 40)
want = backend.forward(inputs)
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # a hang (joining the parent's threads) ends the child with SIGALRM
    got = backend.forward(inputs)  # a new session in this process
    same = all((g == w).all() for g, w in zip(got, want))
    del backend
    gc.collect()
    os._exit(0 if same else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_onnx_backend_survives_a_fork_as_with_qa_preload(tiny, cache_dir):
    import subprocess

    path, model = tiny
    graph = qa_backends.find_or_build_graph(model, path, NAMES, "fp32", cache_dir)
    root = Path(__file__).resolve().parents[2]
    paths = [str(root), str(root / "code")]
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(graph), *paths], timeout=120, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_input_name_choices_cover_what_any_model_would_take():
    """Finding a graph without the model: every input list model_input_names could give."""
    choices = qa_backends.input_name_choices(["input_ids", "token_type_ids", "attention_mask"])
    assert choices[0] == ["input_ids", "token_type_ids", "attention_mask"]  # the likeliest first
    assert sorted(map(tuple, choices)) == sorted(
        [
            ("input_ids", "token_type_ids", "attention_mask"),
            ("input_ids", "token_type_ids"),
            ("input_ids", "attention_mask"),
            ("input_ids",),
        ]
    )
    assert qa_backends.input_name_choices(["input_ids", "attention_mask"]) == [
        ["input_ids", "attention_mask"],
        ["input_ids"],
    ]


def test_a_graph_is_found_by_its_weights_whatever_inputs_it_takes(tiny, tmp_path):
    path, model = tiny
    baked = tmp_path / "model"
    shutil.copytree(path, baked)
    assert qa_backends.main(["export", str(baked), "--precision", "fp32"]) == 0
    choices = qa_backends.input_name_choices(["input_ids", "token_type_ids", "attention_mask"])
    found = qa_backends.find_graph(baked, choices, "fp32", tmp_path / "cache")
    assert found is not None and found[1] == NAMES and found[0].parent == baked / "onnx"
    assert qa_backends.find_graph(baked, choices, "int8", tmp_path / "cache") is None
