"""Inference backends (qa/backends.py) on the tiny fixture model: settings, logits, forks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qa import backends as qa_backends
from qa import graph_files
from qa import graphs as qa_graphs
from qa.loading import load_windows
from qa.windows import example_inputs
from serving.settings import Settings, SettingsError

COMBOS = [
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]
NAMES = ["input_ids", "attention_mask"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("graph-cache")


@pytest.fixture(scope="module")
def windows(tiny):
    return load_windows(tiny[0])


def examples(windows, batch: int, width: int) -> dict:
    """A padded batch of real windows: the first `width` tokens wide, the others shorter."""
    step = width // (2 * batch)
    return example_inputs(windows, NAMES, [width - step * row for row in range(batch)])


def backend_for(tiny, cache_dir, backend, precision):
    path, model = tiny
    windows = load_windows(path)
    graph = None
    kind = graph_files.graph_kind(backend, precision)
    if kind is not None:
        pairs = qa_graphs.builtin_calibration_pairs()[:8]
        graph = qa_graphs.find_or_build_graph(model, path, windows, kind, cache_dir, lambda: pairs)
    return qa_backends.create_backend(
        backend, precision, 1, model=model, graph=graph, warmup=lambda names: examples(windows, 1, 16)
    )


# ---- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,precision", COMBOS)
def test_supported_combinations_parse(backend, precision):
    settings = Settings.from_env({"QA_BACKEND": backend, "QA_PRECISION": precision}, cpu_limit=2)
    assert (settings.backend, settings.precision) == (backend, precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_auto_takes_every_precision(precision):
    settings = Settings.from_env({"QA_PRECISION": precision}, cpu_limit=2)
    assert (settings.backend, settings.precision) == ("auto", precision)


def test_defaults_are_auto_fp32():
    settings = Settings.from_env({}, cpu_limit=2)
    assert (settings.backend, settings.precision, settings.graph_cache_dir) == ("auto", "fp32", None)
    assert settings.graph_cache == settings.run_dir / "graphs"
    assert settings.parallel_batches is None  # the plan's number for the backend


@pytest.mark.parametrize("backend,precision", [("torch", "int8"), ("onnx", "bf16")])
def test_nonsense_combinations_name_both_variables(backend, precision):
    with pytest.raises(SettingsError, match=f"QA_PRECISION={precision}.*QA_BACKEND={backend}"):
        Settings.from_env({"QA_BACKEND": backend, "QA_PRECISION": precision}, cpu_limit=2)


@pytest.mark.parametrize(
    "env",
    [
        {"QA_BACKEND": "tensorrt"},
        {"QA_PRECISION": "fp16"},
        {"QA_BATCH_WAIT_MS": "-1"},
        {"QA_BATCH_MAX_TOKENS": "0"},
        {"QA_PARALLEL_BATCHES": "0"},
    ],
)
def test_malformed_values_are_refused(env):
    with pytest.raises(SettingsError, match=next(iter(env))):
        Settings.from_env(env, cpu_limit=2)


def test_batching_and_cache_settings_parse():
    settings = Settings.from_env(
        {
            "QA_GRAPH_CACHE_DIR": "/var/cache/qa",
            "QA_BATCH_WAIT_MS": "0",
            "QA_BATCH_MAX_TOKENS": "2048",
            "QA_PARALLEL_BATCHES": "3",
        },
        cpu_limit=2,
    )
    assert settings.graph_cache == Path("/var/cache/qa")
    assert (settings.batch_wait_ms, settings.batch_max_tokens) == (0, 2048)
    assert settings.parallel_batches == 3


@pytest.mark.parametrize(
    "backend,cpus,threads", [("torch", 2.0, 1), ("onnx", 2.0, 1), ("torch", 8.0, 4), ("openvino", 8.0, 4)]
)
def test_default_threads_split_the_cpus_between_workers(backend, cpus, threads):
    settings = Settings.from_env(
        {"QA_BACKEND": backend, "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, cpu_limit=cpus
    )
    assert settings.inference_threads == threads
    explicit = Settings.from_env({"QA_BACKEND": backend, "QA_TORCH_THREADS": "3"}, cpu_limit=cpus)
    assert explicit.inference_threads == 3


# ---- logits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,precision", COMBOS)
def test_every_backend_gives_float32_logits_per_token(tiny, windows, cache_dir, backend, precision):
    b = backend_for(tiny, cache_dir, backend, precision)
    assert b.name == f"{backend}-{precision}"
    assert b.input_names == NAMES  # DistilBERT takes no token_type_ids
    start, end = b.forward(examples(windows, 3, 21))
    assert start.shape == end.shape == (3, 21)
    assert start.dtype == end.dtype == np.float32
    assert np.isfinite(start).all() and np.isfinite(end).all()


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
@pytest.mark.parametrize("batch,width", [(1, 12), (3, 40), (8, 384)])
def test_graph_fp32_matches_torch_fp32(tiny, windows, cache_dir, backend, batch, width):
    inputs = examples(windows, batch, width)
    want = backend_for(tiny, cache_dir, "torch", "fp32").forward(inputs)
    got = backend_for(tiny, cache_dir, backend, "fp32").forward(inputs)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "backend,precision", [("torch", "bf16"), ("onnx", "int8"), ("openvino", "bf16"), ("openvino", "int8")]
)
def test_reduced_precision_stays_near_fp32(tiny, windows, cache_dir, backend, precision):
    inputs = examples(windows, 2, 64)
    want = backend_for(tiny, cache_dir, "torch", "fp32").forward(inputs)
    got = backend_for(tiny, cache_dir, backend, precision).forward(inputs)
    for g, w in zip(got, want):
        mask = inputs["attention_mask"] == 1
        assert np.corrcoef(g[mask], w[mask])[0, 1] > 0.95


def test_openvino_fp32_runs_f32_kernels_and_reduced_precision_fixed_scales(tiny, cache_dir):
    """OpenVINO's CPU default is bf16 where the CPU has it, and per-pass activation quantization:
    fp32 and int8 must ask for f32, every precision for no dynamic quantization."""
    import openvino as ov

    # Where the CPU has no bf16 (AVX2 only) OpenVINO keeps f32 whatever it is asked.
    bf16 = (
        ov.Type.bf16 if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else ov.Type.f32
    )
    for precision, hint in (("fp32", ov.Type.f32), ("int8", ov.Type.f32), ("bf16", bf16)):
        b = backend_for(tiny, cache_dir, "openvino", precision)
        assert b._compiled.get_property("INFERENCE_PRECISION_HINT") == hint
        assert int(b._compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")) == 0


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_logits_at_one_width_do_not_depend_on_the_batch(
    tiny, windows, cache_dir, precision
):
    """What SAME_WIDTH batching rests on: padded to one width, a window's logits are the same alone
    and beside other windows."""
    b = backend_for(tiny, cache_dir, "openvino", precision)
    assert b.batching == qa_backends.SAME_WIDTH
    batch = examples(windows, 4, 48)
    batch["attention_mask"][1, 30:] = 0
    together = b.forward(batch)
    for row in range(4):
        alone = b.forward({name: array[row : row + 1] for name, array in batch.items()})
        for t, a in zip(together, alone):
            keep = batch["attention_mask"][row] == 1
            np.testing.assert_allclose(t[row][keep], a[0][keep], atol=1e-5, rtol=0)


FORK_SCRIPT = """
import gc, os, signal, sys
sys.path[:0] = sys.argv[4:]
from qa import backends as qa_backends
from qa.loading import load_windows
from qa.windows import example_inputs
windows = load_windows(sys.argv[3])
warmup = lambda names: example_inputs(windows, names, [16])
backend = qa_backends.create_backend(sys.argv[1], "fp32", 2, graph=sys.argv[2], warmup=warmup)
inputs = example_inputs(windows, backend.input_names, [40, 31])
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


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_graph_backends_survive_a_fork_as_with_qa_preload(tiny, cache_dir, backend):
    path, model = tiny
    graph = qa_graphs.find_or_build_graph(model, path, load_windows(path), "fp32", cache_dir)
    root = Path(__file__).resolve().parents[3]
    paths = [str(root), str(root / "code")]
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, backend, str(graph), str(path), *paths],
        timeout=120,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


ADAPTIVE_CASES = [
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
]


def adaptive_backend(tiny, windows, cache_dir, backend, precision):
    path, model = tiny
    kind = graph_files.graph_kind(backend, precision)
    pairs = qa_graphs.builtin_calibration_pairs()[:8]
    graph = qa_graphs.find_or_build_graph(model, path, windows, kind, cache_dir, lambda: pairs)
    warmup = lambda names: examples(windows, 1, 16)  # noqa: E731
    return qa_backends.create_backend(
        backend, precision, 2, graph=graph, lanes=2, adaptive=True, warmup=warmup
    )


@pytest.mark.parametrize("backend,precision", ADAPTIVE_CASES)
def test_adaptive_backends_answer_alike_on_all_threads_and_on_a_share(
    tiny, windows, cache_dir, backend, precision
):
    """The adaptive plan: a lone pass runs on a form of the model with all the threads (OpenVINO:
    one stream; ONNX Runtime: a session), overlapping ones on a second form, a share each (two
    streams; a session of one thread), made the first time passes overlap; a window's logits are
    the same bit for bit on either."""
    b = adaptive_backend(tiny, windows, cache_dir, backend, precision)
    gate = b._gate
    assert gate.side is None  # not until passes overlap
    inputs = examples(windows, 1 if b.batching == qa_backends.ALONE else 3, 48)
    alone = b.forward(inputs, alone=True)
    assert gate.side is None
    first_overlapping = b.forward(inputs, alone=False)  # on the lone form while the other is made
    deadline = time.monotonic() + 60
    while gate.side is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gate.side is not None
    if backend == "openvino":
        assert int(gate.side.compiled.get_property("NUM_STREAMS")) == 2
        assert int(gate.lone.compiled.get_property("NUM_STREAMS")) == 1
    else:
        assert gate.side.get_session_options().intra_op_num_threads == 1
        assert gate.lone.get_session_options().intra_op_num_threads == 2
    on_a_share = b.forward(inputs, alone=False)
    for got in (first_overlapping, on_a_share):
        for g, want in zip(got, alone):
            np.testing.assert_array_equal(g, want)


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_adaptive_backends_never_run_more_threads_than_they_have(tiny, windows, cache_dir, backend):
    """Passes from four threads at once: a lone pass holds every share, the others one each; the
    count of shares in use never exceeds the lanes."""
    b = adaptive_backend(tiny, windows, cache_dir, backend, "fp32")
    gate = b._gate
    inputs = examples(windows, 1, 32)
    want = b.forward(inputs, alone=True)
    seen = []
    real_enter = gate.enter

    def watched(alone, run):
        form = real_enter(alone, run)
        seen.append(gate.free)  # shares left once this pass took its own
        return form

    gate.enter = watched
    errors = []

    def client(alone):
        try:
            for _ in range(6):
                for g, w in zip(b.forward(inputs, alone=alone), want):
                    np.testing.assert_array_equal(g, w)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    clients = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(120)
    assert not errors
    assert len(seen) == 24 and min(seen) >= 0
    assert gate.free == 2
