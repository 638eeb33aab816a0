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
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

try:
    import torch
except ModuleNotFoundError:
    if __name__ != "__main__":
        raise
    sys.exit(  # `python -m qa.graphs` in the slim image
        "qa.graphs makes graphs with PyTorch and transformers, which this image does not have (the slim "
        "image serves graphs made ahead of time): run it with the full image, e.g. "
        "docker run --rm -v MODEL_DIR:/m FULL_IMAGE python -m qa.graphs export /m"
    )

from qa.backends import OUTPUT_NAMES, BackendError, OnnxBackend, TorchBackend
from qa.errors import QAError
from qa.graph_files import (
    GRAPH_DIR,
    GRAPH_KINDS,
    KINDS_FOR_PRECISION,
    ONNX_OPSET,
    GraphMismatch,
    find_graph,
    graph_name,
    weights_digest,
)
from qa.windows import Windower, example_inputs, pad_windows

log = logging.getLogger(__name__)

MAX_EXPORT_ERROR = 1e-3  # exported fp32 graph vs PyTorch, checked once after export
EXPORT_TRACE_WIDTHS = (32, 20)  # the example batch the graph is traced on (rows of real windows)
EXPORT_PROBE_WIDTHS = (48, 41, 27)  # another batch size and width, to check the traced graph
# Windows of the built-in corpus (or the user's samples) that fix int8's activation scales:
# measured on the full-size stand-in, 100 agreed with fp32 no better than 64 and took 30% longer.
CALIBRATION_WINDOWS = 64
CALIBRATION_MAX_SEQ_LEN, CALIBRATION_STRIDE = 384, 128  # the serving defaults
CALIBRATION_SEED = 7  # not the benchmark's seed: calibration never sees the measured requests

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


def export_onnx(model, windows: Windower, path: Path) -> None:
    """Trace the model into an fp32 ONNX graph with dynamic batch and sequence axes, and check it
    on other shapes: a model whose code branches on its input (Longformer's windowed attention)
    traces into a graph that only fits the traced shape, and is refused here."""
    input_names = TorchBackend(model, "fp32").input_names
    wrapper = _Positional(model, input_names).eval()
    was_training = model.training
    example = example_inputs(windows, input_names, EXPORT_TRACE_WIDTHS)
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
    probe = example_inputs(windows, input_names, EXPORT_PROBE_WIDTHS)
    want = TorchBackend(model, "fp32").forward(probe)
    try:
        got = OnnxBackend(path, "fp32", threads=1).forward(probe)
    except Exception as exc:  # ONNX Runtime raises its own types; a failing graph is a mismatch too
        raise GraphMismatch(
            f"its exported ONNX graph fails on other input shapes than it was traced with "
            f"({str(exc).splitlines()[0][:200]})"
        ) from exc
    mask = probe["attention_mask"].astype(bool)
    error = max(float(np.abs(g - w)[mask].max()) for g, w in zip(got, want))
    if not error <= MAX_EXPORT_ERROR:
        raise GraphMismatch(
            f"its exported ONNX graph disagrees with PyTorch (largest logit difference {error:.3g}, "
            f"allowed {MAX_EXPORT_ERROR:g})"
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
    _gather_rows_before_dequantizing(quantized)
    # Not fp16: the float parts (the head, the scales) keep their fp32 weights.
    ov.save_model(quantized, str(dst), compress_to_fp16=False)


def _gather_rows_before_dequantizing(model) -> None:
    """NNCF stores each embedding table as int8 rows times a scale per row, dequantized before the
    Gather; OpenVINO's CPU plugin folds that into an fp32 table at compile (94 MB of a worker's
    memory for DistilBERT's words, four times the int8 table). Gathering the int8 rows and their
    scales first, then multiplying, computes the same products, bit for bit, from the int8 table."""
    import openvino as ov
    import openvino.opset13 as ops

    for gather in model.get_ordered_ops():
        if gather.get_type_name() != "Gather":
            continue
        dequantize = gather.input_value(0).get_node()
        if dequantize.get_type_name() != "Multiply":
            continue
        convert, scale = (dequantize.input_value(i).get_node() for i in (0, 1))
        if convert.get_type_name() != "Convert" or scale.get_type_name() != "Constant":
            continue
        table = convert.input_value(0)
        if table.get_element_type() != ov.Type.i8 or len(dequantize.output(0).get_target_inputs()) != 1:
            continue
        ids, axis = gather.input_value(1), gather.input_value(2)
        int8_rows = ops.gather(table, ids, axis)
        int8_rows.set_friendly_name(f"{gather.get_friendly_name()}/int8_rows")
        rows = ops.multiply(ops.convert(int8_rows, ov.Type.f32), ops.gather(scale.output(0), ids, axis))
        rows.set_friendly_name(gather.get_friendly_name())
        for consumer in list(gather.output(0).get_target_inputs()):
            consumer.replace_source_output(rows.output(0))


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
    windows: Windower,
    input_names: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    count: int = CALIBRATION_WINDOWS,
) -> list[dict[str, np.ndarray]]:
    """Up to `count` unpadded windows (batch of one) of these (question, context) pairs, cut as
    the serving defaults cut them."""
    inputs = []
    for question, context in pairs:
        for window in windows.windows_of(question, context, CALIBRATION_MAX_SEQ_LEN, CALIBRATION_STRIDE):
            inputs.append(pad_windows([window], len(window.input_ids), windows.pad_token_id, input_names))
            if len(inputs) == count:
                return inputs
    return inputs


def builtin_calibration_pairs() -> list[tuple[str, str]]:
    """SQuAD-like (question, context) pairs from the built-in corpus (qa/corpus.py)."""
    from qa.corpus import make_requests

    return [(r.question, r.context) for r in make_requests(CALIBRATION_WINDOWS, seed=CALIBRATION_SEED)]


def build_graph(
    model,
    windows: Windower,
    kind: str,
    out: Path,
    calibration_pairs: Callable[[], Sequence[tuple[str, str]]] = builtin_calibration_pairs,
) -> None:
    """Make a graph of this kind into `out`, atomically: a reader never sees half a file.
    int8-static calibrates on the windows of `calibration_pairs()` (question, context)."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, windows, fp32)
        if kind == "fp32":
            os.replace(fp32, out)
        elif kind == "int8-dynamic":
            quantize_dynamic_int8(fp32, Path(tmp) / "int8.onnx")
            os.replace(Path(tmp) / "int8.onnx", out)
        elif kind == "int8-static":
            made = Path(tmp) / out.name
            names = TorchBackend(model, "fp32").input_names
            quantize_static_int8(fp32, made, calibration_inputs(windows, names, calibration_pairs()))
            os.replace(made.with_suffix(".bin"), out.with_suffix(".bin"))
            os.replace(made, out)  # the .xml last: finding it means the pair is whole
        else:
            raise BackendError(f"unknown graph kind {kind!r}: one of {', '.join(GRAPH_KINDS)}")


def find_or_build_graph(
    model,
    model_dir: Path,
    windows: Windower,
    kind: str,
    cache_dir: Path,
    calibration_pairs: Callable[[], Sequence[tuple[str, str]]] = builtin_calibration_pairs,
) -> Path:
    """A graph made ahead of time or cached (`find_graph`), else make it into the cache. A model
    whose graph disagreed with PyTorch is remembered, so other workers do not export it again."""
    weights = weights_digest(model_dir)  # ~0.4 s for a full-size model: once
    found = find_graph(model_dir, kind, cache_dir, weights)
    if found is not None:
        return found
    name = graph_name(model_dir, kind, weights)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    refused = cache_dir / f"{name}.mismatch"
    # Workers start together: one makes the graph, the others wait on the lock and reuse its file.
    with (cache_dir / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if refused.is_file():
            raise GraphMismatch(refused.read_text(encoding="utf-8"))
        if not (cache_dir / name).is_file():
            began = time.monotonic()
            try:
                build_graph(model, windows, kind, cache_dir / name, calibration_pairs)
            except GraphMismatch as exc:
                refused.write_text(str(exc), encoding="utf-8")
                raise
            log.info("made the %s graph %s in %.1f s", kind, cache_dir / name, time.monotonic() - began)
    return cache_dir / name


# ---- model helpers --------------------------------------------------------------------------


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
    """(question, context) pairs from a sample file: JSON Lines of request bodies, as /invocations
    takes them, or a labeled dev set (SQuAD JSON, labeled JSON Lines), as qa/samples.py reads them."""
    from qa.samples import read_samples

    return read_samples(path).pairs


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
        help="requests to calibrate int8 on: JSON Lines of request bodies, or a SQuAD JSON or labeled JSON Lines file (default: a built-in SQuAD-like corpus)",
    )
    args = parser.parse_args(argv)

    from qa.loading import load_torch_model, load_windows

    pairs = builtin_calibration_pairs
    if args.samples is not None:
        try:
            samples = sample_pairs(args.samples)
        except (OSError, QAError) as exc:
            print(f"error: --samples {args.samples}: {exc}", file=sys.stderr)
            return 2

        def pairs():
            return samples

    try:
        windows = load_windows(args.model_dir)
        # Start-up trusts a graph it finds and skips the weights: a graph of random weights must not exist.
        model = load_torch_model(args.model_dir, use_safetensors=None)
    except QAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.model_dir / GRAPH_DIR
    out.mkdir(parents=True, exist_ok=True)
    if not (args.model_dir / "tokenizer.json").is_file():
        # A converted slow tokenizer is kept beside the graphs: start-up then converts nothing.
        from qa.tokenizer_conversion import KEPT_NAME, write_atomically

        write_atomically(out / KEPT_NAME, windows.tokenizer_json())
    kinds = dict.fromkeys(kind for precision in args.precision for kind in KINDS_FOR_PRECISION[precision])
    for kind in kinds:
        path = out / graph_name(args.model_dir, kind)
        for stale in (path, path.with_suffix(".bin")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        try:
            build_graph(model, windows, kind, path, pairs)
        except GraphMismatch as exc:
            print(
                f"error: {args.model_dir} ({type(model).__name__}): {exc}; serve it with QA_BACKEND=torch "
                f"(QA_BACKEND=auto does so by itself)",
                file=sys.stderr,
            )
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
