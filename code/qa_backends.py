"""Inference backends: the model's forward pass on padded int64 arrays, by QA_BACKEND and QA_PRECISION.

    torch + fp32   the transformers model as loaded (the reference)
    torch + bf16   the same under torch.autocast("cpu", bfloat16); logits upcast to float32
    onnx  + fp32   ONNX Runtime on a graph exported from the loaded model
    onnx  + int8   the same graph with dynamically quantized (int8) MatMul weights

`backend.forward({"input_ids": ..., "attention_mask": ...})` returns float32 (start, end) logits of
shape (batch, width). ONNX graphs are exported once, never per request: ahead of time into
`<model_dir>/onnx/` (`python code/qa_backends.py export MODEL_DIR`, which build.sh and
`deploy package --onnx-from-image` run), else at start-up into QA_ONNX_CACHE_DIR (default
`<run_dir>/onnx`). The file name carries a key over the weight files, the precision, the inputs
and the library versions, so a stale graph is never picked up; a worker that finds its graph
skips loading the PyTorch model (qa_model.py).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

if __name__ == "__main__":  # run as a script: make `serving` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.settings import BACKEND_PRECISIONS, Settings  # noqa: E402

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("start_logits", "end_logits")
ONNX_OPSET = 17
EXPORT_FORMAT = 2  # bump when the export or quantization steps change: old graphs stop matching
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")  # config.json and weights (and shard indexes)
MAX_EXPORT_ERROR = 1e-3  # exported fp32 graph vs PyTorch, checked once after export
WARMUP_WIDTH = 16


class BackendError(RuntimeError):
    """The backend cannot be built (bad combination, failed export); the message says why."""


def check_combination(backend: str, precision: str) -> None:
    if precision not in BACKEND_PRECISIONS.get(backend, ()):
        raise BackendError(
            f"QA_PRECISION={precision} is not supported with QA_BACKEND={backend}: combinations are "
            + ", ".join(f"{b} with {'/'.join(p)}" for b, p in BACKEND_PRECISIONS.items())
        )


# ---- PyTorch --------------------------------------------------------------------------------


class TorchBackend:
    batch_invariant = True  # a window's logits do not depend on the windows beside it

    def __init__(self, model, precision: str):
        self.model = model
        self.name = f"torch-{precision}"
        self.autocast = precision == "bf16"
        self._use_cache_arg = "use_cache" in _forward_parameters(model)

    def forward(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tensors = {name: torch.from_numpy(array) for name, array in inputs.items()}
        if self._use_cache_arg:
            tensors["use_cache"] = False
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            output = self.model(**tensors)
        # The pipeline upcast bfloat16 logits; float32 is what decoding works in.
        return output[0].float().numpy().copy(), output[1].float().numpy().copy()


def _forward_parameters(model) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


# ---- ONNX Runtime ---------------------------------------------------------------------------


class OnnxBackend:
    """An ONNX Runtime session; re-created in a forked child (ORT sessions do not survive fork)."""

    def __init__(self, path: Path, precision: str, threads: int):
        self.path = Path(path)
        # Dynamic int8 quantizes activations with one scale per tensor, so a window's logits
        # would shift with the windows (and padding) it shares a pass with: under load, the same
        # request could get another answer. int8 therefore runs one window per pass.
        self.batch_invariant = precision != "int8"
        self.name = f"onnx-{precision}"
        self.threads = threads
        self._pid = None
        self._session = None
        self._session_for_this_process()

    def _session_for_this_process(self):
        if self._pid != os.getpid():
            import onnxruntime as ort

            if self._session is not None:
                # Made before a fork (QA_PRELOAD): destroying it here would join intra-op
                # threads that only exist in the parent, which hangs. Keep it, unused, for good.
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._session))

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Workers share few CPUs: idle pool threads must sleep, not spin.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # The arena reuses activation buffers within a run (without it, int8 at one window ran
            # 10-20% slower on an AVX2 CPU); shrinking it after each run gives the memory back, which
            # it would otherwise keep at the largest batch's size (+670 MB after 16 x 384 tokens).
            options.enable_cpu_mem_arena = True
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self._session.get_inputs()]
            self._pid = os.getpid()
        return self._session

    def forward(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        session = self._session_for_this_process()
        feed = {name: inputs[name] for name in self.input_names}
        start, end = session.run(list(OUTPUT_NAMES), feed, self._run_options)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


class _Positional(torch.nn.Module):
    """The QA model with positional inputs and a (start, end) tuple out, for the tracer."""

    def __init__(self, model, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *tensors):
        output = self.model(**dict(zip(self.input_names, tensors)), return_dict=False)
        return output[0], output[1]


def example_inputs(
    input_names: Sequence[str], batch: int, width: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Padded inputs of this shape: the last row is shorter, so the masking path is traced."""
    rng = np.random.default_rng(seed)
    arrays = {
        "input_ids": rng.integers(1000, 2000, (batch, width), dtype=np.int64),
        "attention_mask": np.ones((batch, width), dtype=np.int64),
        "token_type_ids": np.zeros((batch, width), dtype=np.int64),
    }
    arrays["attention_mask"][-1, width // 2 :] = 0
    arrays["input_ids"][-1, width // 2 :] = 0
    arrays["token_type_ids"][:, width // 3 :] = 1
    return {name: arrays[name] for name in input_names}


def export_onnx(model, input_names: Sequence[str], path: Path) -> None:
    """Trace the model into an fp32 ONNX graph with dynamic batch and sequence axes, and check it."""
    wrapper = _Positional(model, input_names).eval()
    was_training = model.training
    example = example_inputs(input_names, 2, 12)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*input_names, *OUTPUT_NAMES)}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns that it is deprecated and that shapes are traced as
            # constants; the check below is what tells whether the graph is right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tuple(torch.from_numpy(example[name]) for name in input_names),
                str(path),
                dynamo=False,
                input_names=list(input_names),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=axes,
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)  # the exporter restores the wrapper's mode, which was not the model's
    # Another batch size and width than traced, with padding: the graph must agree with PyTorch.
    probe = example_inputs(input_names, 3, 23, seed=1)
    want = TorchBackend(model, "fp32").forward(probe)
    got = OnnxBackend(path, "fp32", threads=1).forward(probe)
    error = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    if not error <= MAX_EXPORT_ERROR:
        raise BackendError(
            f"the exported ONNX graph disagrees with PyTorch (max logit difference {error:.2e})"
        )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization: int8 weights, activations quantized per batch at run time.

    Signed int8 weights (QInt8) ran 4x faster than QUInt8 here (AVX-512 VNNI); per-channel scales
    and ORT's fused-attention graph were no faster and agreed no better with fp32. The answer
    head (qa_outputs, 2 output columns: no time to save) stays float: that kept one more golden
    answer equal to fp32.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    head = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and "qa_outputs" in n.name]

    # The quantizer logs a line per tensor on the root logger; keep them out of the service log.
    quiet = _DropFrom(str(Path(quantize_dynamic.__code__.co_filename).parent))
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=head,
        )
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropFrom(logging.Filter):
    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.directory)


def weights_digest(model_dir: Path) -> str:
    """Hash of the weights and the config (what the graph is made of), file names included."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES and not path.name.startswith("tokenizer"):
            digest.update(path.name.encode())
            with path.open("rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
    return digest.hexdigest()


def graph_key(model_dir: Path, precision: str, input_names: Sequence[str], weights: str | None = None) -> str:
    """Hash of the weights and config, the precision, inputs and every library that shapes the graph."""
    import onnx
    import onnxruntime
    import transformers

    versions = (EXPORT_FORMAT, ONNX_OPSET, torch.__version__, transformers.__version__, onnx.__version__)
    weights = weights or weights_digest(model_dir)
    described = repr((versions, onnxruntime.__version__, precision, list(input_names), weights))
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def graph_name(model_dir: Path, precision: str, input_names: Sequence[str], weights: str | None = None) -> str:
    return f"qa-{precision}-{graph_key(model_dir, precision, input_names, weights)}.onnx"


def find_graph(
    model_dir: Path,
    input_name_choices: Sequence[Sequence[str]],
    precision: str,
    cache_dir: Path,
    weights: str | None = None,
) -> tuple[Path, list[str]] | None:
    """A baked graph from <model_dir>/onnx, else a cached one, for any of the input name lists
    offered: (its path, its input names), else None. The weights are hashed once."""
    weights = weights or weights_digest(model_dir)
    for input_names in input_name_choices:
        name = graph_name(model_dir, precision, input_names, weights)
        for directory in (Path(model_dir) / "onnx", Path(cache_dir)):
            if (directory / name).is_file():
                return directory / name, list(input_names)
    return None


def build_graph(model, input_names: Sequence[str], precision: str, out: Path) -> None:
    """Export (and quantize) into `out`, atomically: a reader never sees half a file."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, input_names, fp32)
        result = fp32
        if precision == "int8":
            result = Path(tmp) / "int8.onnx"
            quantize_int8(fp32, result)
        os.replace(result, out)


def find_or_build_graph(
    model, model_dir: Path, input_names: Sequence[str], precision: str, cache_dir: Path
) -> Path:
    """A baked or cached graph (`find_graph`), else export into the cache."""
    weights = weights_digest(model_dir)  # ~0.4 s for a full-size model: once
    found = find_graph(model_dir, [input_names], precision, cache_dir, weights)
    if found is not None:
        log.info("using ONNX graph %s", found[0])
        return found[0]
    name = graph_name(model_dir, precision, input_names, weights)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Workers start together: one exports, the others wait on the lock and reuse its file.
    with (cache_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache_dir / name).is_file():
            began = time.monotonic()
            build_graph(model, input_names, precision, cache_dir / name)
            log.info("exported ONNX graph %s in %.1f s", cache_dir / name, time.monotonic() - began)
    return cache_dir / name


# ---- choosing one ---------------------------------------------------------------------------


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of this CPU as Linux lists them (empty where it does not)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def check_cpu(precision: str, flags: set[str]) -> None:
    """Warn where the CPU runs this precision without the instructions that make it pay."""
    if not flags:
        return
    if precision == "bf16" and not flags & {"avx512_bf16", "amx_bf16"}:
        # Measured on an AVX2-only EPYC: bf16 autocast 5x slower than fp32, not 2x faster.
        log.warning(
            "QA_PRECISION=bf16 on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16 flag): "
            "PyTorch emulates it, several times slower than fp32; use QA_PRECISION=fp32 or int8 here"
        )
    if precision == "int8" and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        log.warning(
            "QA_PRECISION=int8 on a CPU without VNNI (no avx512_vnni, avx_vnni or amx_int8 flag): "
            "int8 runs on AVX2 kernels, expect well under the speed-up of VNNI CPUs"
        )


def create_backend(
    model, model_dir: Path, input_names: Sequence[str], settings: Settings, graph: Path | None = None
):
    """The backend the settings ask for, warmed up with one small forward pass. `graph`: an ONNX
    graph the caller already found (then `model` may be None)."""
    check_combination(settings.backend, settings.precision)
    check_cpu(settings.precision, cpu_flags())
    if settings.backend == "torch":
        backend = TorchBackend(model, settings.precision)
    elif graph is not None:
        log.info("using ONNX graph %s", graph)
        backend = OnnxBackend(graph, settings.precision, settings.torch_threads)
    else:
        cache_dir = settings.onnx_cache_dir or settings.run_dir / "onnx"
        try:
            path = find_or_build_graph(model, model_dir, input_names, settings.precision, cache_dir)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"cannot build the ONNX graph for {model_dir} in {cache_dir}: {exc}") from exc
        backend = OnnxBackend(path, settings.precision, settings.torch_threads)
    backend.forward(example_inputs(input_names, 1, WARMUP_WIDTH))  # ORT allocates and plans on first run
    return backend


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export ONNX graphs of a QA model for QA_BACKEND=onnx.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export", help="write <out>/qa-<precision>-<key>.onnx (default out: MODEL_DIR/onnx)"
    )
    export.add_argument("model_dir", type=Path)
    export.add_argument("out", type=Path, nargs="?")
    export.add_argument(
        "--precision", nargs="+", default=["fp32", "int8"], choices=BACKEND_PRECISIONS["onnx"]
    )
    args = parser.parse_args(argv)

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    model, info = AutoModelForQuestionAnswering.from_pretrained(
        args.model_dir, local_files_only=True, output_loading_info=True
    )
    # Start-up trusts a graph it finds and skips the weights: a graph of random weights must not exist.
    untrained = untrained_weights(args.model_dir, info)
    if untrained:
        print(f"error: {untrained}", file=sys.stderr)
        return 2
    model.eval()
    input_names = model_input_names(model, tokenizer.model_input_names)
    out = args.out or args.model_dir / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    for precision in args.precision:
        path = out / graph_name(args.model_dir, precision, input_names)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        build_graph(model, input_names, precision, path)
        print(path)
    return 0


def untrained_weights(model_dir: Path, loading_info: Mapping) -> str | None:
    """What is wrong when from_pretrained had to initialise weights at random, else None."""
    missing = sorted(loading_info.get("missing_keys") or ())
    if not missing:
        return None
    return (
        f"{model_dir}: the weights lack {', '.join(missing[:4])}: this is not a trained "
        f"question-answering model (its answers would be random)"
    )


FORWARD_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model, tokenizer_input_names: Sequence[str]) -> list[str]:
    """The inputs the forward pass is fed: the tokenizer's, where the model takes them."""
    accepted = _forward_parameters(model)
    return [n for n in tokenizer_input_names if n in FORWARD_INPUTS and n in accepted]


def input_name_choices(tokenizer_input_names: Sequence[str]) -> list[list[str]]:
    """Every list `model_input_names` could give for this tokenizer (input_ids and any of the
    others), without the model: how a graph is found before, or instead of, loading it."""
    names = [n for n in tokenizer_input_names if n in FORWARD_INPUTS]
    optional = [n for n in names if n != "input_ids"]
    choices = []
    for mask in range(2 ** len(optional) - 1, -1, -1):
        kept = {n for i, n in enumerate(optional) if mask >> i & 1}
        choices.append([n for n in names if n == "input_ids" or n in kept])
    return choices


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
