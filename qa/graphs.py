"""Graphs for the ONNX Runtime and OpenVINO backends: made once, never per request.

Three kinds, each serving some (backend, precision) pairs (`graph_kind`):

    fp32          ONNX, traced from the PyTorch model        onnx fp32, openvino fp32 and bf16
    int8-dynamic  ONNX, int8 MatMul weights (ONNX Runtime)   onnx int8
    int8-static   OpenVINO IR, int8 weights and activations  openvino int8
                  with fixed scales calibrated here (NNCF)

Graphs are made ahead of time into `<model_dir>/graphs/` (`python -m qa.graphs export
MODEL_DIR`, which build.sh and `deploy package --graphs-from-image` run), else at start-up into
QA_GRAPH_CACHE_DIR (default `<run_dir>/graphs`). A file's name carries a key over the weight
files, the kind, the inputs and the versions of the libraries that shape it, so a stale graph is
never picked up; a worker that finds its graph skips loading the PyTorch model (qa/model.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from qa.backends import OUTPUT_NAMES, BackendError, OnnxBackend, TorchBackend, example_inputs
from qa.errors import QAError

log = logging.getLogger(__name__)

GRAPH_DIR = "graphs"  # <model_dir>/graphs: where start-up looks before making a graph
ONNX_OPSET = 17
EXPORT_FORMAT = 3  # bump when a making step changes: old graphs stop matching
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")  # config.json and weights (and shard indexes)
MAX_EXPORT_ERROR = 1e-3  # exported fp32 graph vs PyTorch, checked once after export
# Windows of the built-in corpus (or the user's samples) that fix int8's activation scales:
# measured on the full-size stand-in, 100 agreed with fp32 no better than 64 and took 30% longer.
CALIBRATION_WINDOWS = 64
CALIBRATION_MAX_SEQ_LEN, CALIBRATION_STRIDE = 384, 128  # the serving defaults
CALIBRATION_SEED = 7  # not the benchmark's seed: calibration never sees the measured requests

# kind -> (file suffix, the libraries whose versions shape that graph)
GRAPH_KINDS = {
    "fp32": (".onnx", ("torch", "transformers", "onnx")),
    "int8-dynamic": (".onnx", ("torch", "transformers", "onnx", "onnxruntime")),
    "int8-static": (".xml", ("torch", "transformers", "onnx", "openvino", "nncf")),
}
# What each precision needs made ahead of time, whichever backend the CPU it lands on picks.
KINDS_FOR_PRECISION = {"fp32": ("fp32",), "bf16": ("fp32",), "int8": ("int8-dynamic", "int8-static")}
REPORT_FILE = "precision-report.json"  # written next to the graphs by `deploy package`


def graph_kind(backend: str, precision: str) -> str | None:
    """The graph a backend runs for a precision; None for torch, which runs the module itself."""
    if backend == "torch":
        return None
    if precision == "int8":
        return "int8-static" if backend == "openvino" else "int8-dynamic"
    return "fp32"


# ---- making graphs --------------------------------------------------------------------------


class _Positional(torch.nn.Module):
    """The QA model with positional inputs and a (start, end) tuple out, for the tracer."""

    def __init__(self, model, input_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *tensors):
        output = self.model(**dict(zip(self.input_names, tensors)), return_dict=False)
        return output[0], output[1]


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


def quantize_dynamic_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime's dynamic quantization: int8 weights, activations quantized per pass at run time.

    Signed int8 weights (QInt8) ran 4x faster than QUInt8 (AVX-512 VNNI); per-channel scales and
    ORT's fused-attention graph were no faster and agreed no better with fp32. The answer head
    (qa_outputs, 2 output columns: no time to save) stays float: that kept one more golden answer
    equal to fp32.
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


def quantize_static_int8(src: Path, dst: Path, calibration: Sequence[Mapping[str, np.ndarray]]) -> None:
    """NNCF post-training quantization into an OpenVINO IR (`dst`, .xml with its .bin).

    Activation scales are fixed here from the calibration windows, so at run time a window's
    logits depend on nothing but the window and the width it is padded to: static int8 batches
    without changing answers (the OpenVINO backend pads to fixed widths). The answer head stays
    float, as for dynamic int8 (on the stand-in: 95 vs 93 of 100 argmax pairs equal to fp32).
    """
    _telemetry_off()
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(src))
    head = [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "MatMul" and "qa_outputs" in op.get_friendly_name()
    ]
    with _quiet_stdout():  # NNCF draws progress bars; the service log is JSON lines
        quantized = nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(names=head, validate=False),
        )
    # Not fp16: the float parts (embeddings, the head) keep their fp32 weights.
    ov.save_model(quantized, str(dst), compress_to_fp16=False)


@contextlib.contextmanager
def _quiet_stdout():
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _telemetry_off() -> None:
    """NNCF sends usage telemetry unless the user's consent file (openvino-telemetry's
    ~/intel/openvino_telemetry) says 0; write that answer where none was given. The image also
    has it from its build."""
    consent = Path.home() / "intel" / "openvino_telemetry"
    with contextlib.suppress(OSError):
        if not consent.exists():
            consent.parent.mkdir(parents=True, exist_ok=True)
            consent.write_text("0")


class _DropFrom(logging.Filter):
    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.directory)


def calibration_inputs(
    tokenizer, input_names: Sequence[str], pairs: Sequence[tuple[str, str]], count: int = CALIBRATION_WINDOWS
) -> list[dict[str, np.ndarray]]:
    """Up to `count` unpadded windows (batch of one) of these (question, context) pairs, cut as
    the serving defaults cut them."""
    question_first = tokenizer.padding_side == "right"
    windows = []
    for question, context in pairs:
        first, second = (question, context) if question_first else (context, question)
        encoded = tokenizer(
            first,
            second,
            truncation="only_second" if question_first else "only_first",
            max_length=CALIBRATION_MAX_SEQ_LEN,
            stride=CALIBRATION_STRIDE,
            return_overflowing_tokens=True,
        )
        for row, ids in enumerate(encoded["input_ids"]):
            arrays = {
                "input_ids": ids,
                "attention_mask": encoded["attention_mask"][row],
                "token_type_ids": encoded["token_type_ids"][row]
                if "token_type_ids" in encoded
                else [0] * len(ids),
            }
            windows.append({name: np.array([arrays[name]], dtype=np.int64) for name in input_names})
            if len(windows) == count:
                return windows
    return windows


def builtin_calibration_pairs() -> list[tuple[str, str]]:
    """SQuAD-like (question, context) pairs from the built-in corpus (qa/corpus.py)."""
    from qa.corpus import make_requests

    return [(r.question, r.context) for r in make_requests(CALIBRATION_WINDOWS, seed=CALIBRATION_SEED)]


def build_graph(
    model, input_names: Sequence[str], kind: str, out: Path, calibration: Callable[[], list] | None = None
) -> None:
    """Make a graph of this kind into `out`, atomically: a reader never sees half a file.
    `calibration` gives the int8-static windows (`calibration_inputs`)."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, input_names, fp32)
        if kind == "fp32":
            os.replace(fp32, out)
        elif kind == "int8-dynamic":
            quantize_dynamic_int8(fp32, Path(tmp) / "int8.onnx")
            os.replace(Path(tmp) / "int8.onnx", out)
        elif kind == "int8-static":
            if calibration is None:
                raise BackendError("int8-static graphs need calibration windows")
            made = Path(tmp) / out.name
            quantize_static_int8(fp32, made, calibration())
            os.replace(made.with_suffix(".bin"), out.with_suffix(".bin"))
            os.replace(made, out)  # the .xml last: finding it means the pair is whole
        else:
            raise BackendError(f"unknown graph kind {kind!r}: one of {', '.join(GRAPH_KINDS)}")


# ---- naming and finding ---------------------------------------------------------------------


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


def graph_key(model_dir: Path, kind: str, input_names: Sequence[str], weights: str | None = None) -> str:
    """Hash of the weights and config, the kind, the inputs and every library that shapes the graph."""
    libraries = GRAPH_KINDS[kind][1]
    versions = (EXPORT_FORMAT, ONNX_OPSET, *(importlib.metadata.version(name) for name in libraries))
    weights = weights or weights_digest(model_dir)
    described = repr((versions, kind, list(input_names), weights))
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def graph_name(model_dir: Path, kind: str, input_names: Sequence[str], weights: str | None = None) -> str:
    return f"qa-{kind}-{graph_key(model_dir, kind, input_names, weights)}{GRAPH_KINDS[kind][0]}"


def find_graph(
    model_dir: Path,
    input_name_choices: Sequence[Sequence[str]],
    kind: str,
    cache_dir: Path,
    weights: str | None = None,
) -> tuple[Path, list[str]] | None:
    """A graph made ahead of time in <model_dir>/graphs, else a cached one, for any of the input
    name lists offered: (its path, its input names), else None. The weights are hashed once."""
    weights = weights or weights_digest(model_dir)
    for input_names in input_name_choices:
        name = graph_name(model_dir, kind, input_names, weights)
        for directory in (Path(model_dir) / GRAPH_DIR, Path(cache_dir)):
            if (directory / name).is_file():
                return directory / name, list(input_names)
    return None


def find_or_build_graph(
    model,
    model_dir: Path,
    input_names: Sequence[str],
    kind: str,
    cache_dir: Path,
    calibration: Callable[[], list] | None = None,
) -> Path:
    """A graph made ahead of time or cached (`find_graph`), else make it into the cache."""
    weights = weights_digest(model_dir)  # ~0.4 s for a full-size model: once
    found = find_graph(model_dir, [input_names], kind, cache_dir, weights)
    if found is not None:
        return found[0]
    name = graph_name(model_dir, kind, input_names, weights)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Workers start together: one makes the graph, the others wait on the lock and reuse its file.
    with (cache_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache_dir / name).is_file():
            began = time.monotonic()
            build_graph(model, input_names, kind, cache_dir / name, calibration)
            log.info("made the %s graph %s in %.1f s", kind, cache_dir / name, time.monotonic() - began)
    return cache_dir / name


# ---- model helpers --------------------------------------------------------------------------

FORWARD_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_input_names(model, tokenizer_input_names: Sequence[str]) -> list[str]:
    """The inputs the forward pass is fed: the tokenizer's, where the model takes them."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
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


def untrained_weights(model_dir: Path, loading_info: Mapping) -> str | None:
    """What is wrong when from_pretrained had to initialise weights at random, else None."""
    missing = sorted(loading_info.get("missing_keys") or ())
    if not missing:
        return None
    return (
        f"{model_dir}: the weights lack {', '.join(missing[:4])}: this is not a trained "
        f"question-answering model (its answers would be random)"
    )


def sample_pairs(path: Path) -> list[tuple[str, str]]:
    """(question, context) pairs from a JSON Lines file of request bodies, as /invocations takes them."""
    from qa.request import parse_request

    request = parse_request(Path(path).read_bytes(), "application/jsonlines", max_items=100_000)
    return [(item.question, item.context) for query in request.queries for item in query.items]


# ---- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Make the graphs of a QA model ahead of time, so that start-up finds them."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export", help=f"write <out>/qa-<kind>-<key>.<onnx|xml> (default out: MODEL_DIR/{GRAPH_DIR})"
    )
    export.add_argument("model_dir", type=Path)
    export.add_argument("out", type=Path, nargs="?")
    export.add_argument(
        "--precision",
        nargs="+",
        default=list(KINDS_FOR_PRECISION),
        choices=list(KINDS_FOR_PRECISION),
        help="the precisions to serve (default: all); int8 makes both int8 graphs, one per CPU class",
    )
    export.add_argument(
        "--samples",
        type=Path,
        help="JSON Lines of requests to calibrate int8 on (default: a built-in SQuAD-like corpus)",
    )
    args = parser.parse_args(argv)

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    pairs = builtin_calibration_pairs
    if args.samples is not None:
        try:
            samples = sample_pairs(args.samples)
        except (OSError, QAError) as exc:
            print(f"error: --samples {args.samples}: {exc}", file=sys.stderr)
            return 2

        def pairs():
            return samples

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
    out = args.out or args.model_dir / GRAPH_DIR
    out.mkdir(parents=True, exist_ok=True)
    kinds = dict.fromkeys(kind for precision in args.precision for kind in KINDS_FOR_PRECISION[precision])
    for kind in kinds:
        path = out / graph_name(args.model_dir, kind, input_names)
        for stale in (path, path.with_suffix(".bin")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        build_graph(
            model, input_names, kind, path, lambda: calibration_inputs(tokenizer, input_names, pairs())
        )
        print(path)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
