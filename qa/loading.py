"""Loading an extractive QA model for serving: check the directory, load the tokenizer, resolve
the execution plan for this CPU (plan.py), find or make the plan's graph (graphs.py), and start
its backend (backends.py). `load_model` reads as those steps.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import json
import logging
import re
import time
from pathlib import Path

from qa.backends import BackendError, create_backend
from qa.cpu import cpu_flags
from qa.errors import ModelLoadError
from qa.graph_files import GRAPH_DIR, REPORT_FILE, GraphMismatch, find_graph, graph_kind, graph_name
from qa.json_files import read_json_object
from qa.memory import check_load_fits, load_need_bytes, weight_bytes
from qa.model import QAModel
from qa.options import QAOptions
from qa.plan import Plan, check_cpu, resolve_plan, torch_plan
from qa.report import summary_line
from qa.tokenizer import TokenizerFilesError, load_tokenizer
from qa.windows import Windower, example_inputs

log = logging.getLogger(__name__)

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "spm.model",
    "sentencepiece.bpe.model",
)
WARMUP_WIDTHS = (32,)  # one window of up to 32 tokens: the runtimes allocate and plan on a first pass
# A QA head: BertForQuestionAnswering, ..., XLNetForQuestionAnsweringSimple.
QA_HEAD = re.compile(r"ForQuestionAnswering(Simple)?$")
# Golden-tested against transformers 4.57.6's pipeline (tests/fixtures/README.md); README's table.
TESTED_ARCHITECTURES = (
    "ALBERT",
    "BERT",
    "CamemBERT",
    "DeBERTa-v2/v3",
    "DistilBERT",
    "ELECTRA",
    "Longformer",
    "MobileBERT",
    "RoBERTa",
    "XLM-RoBERTa",
    "XLNet",
)


def load_model(model_dir: Path, options: QAOptions) -> QAModel:
    """An extractive QA model and the tokenizer it was trained with, from a save_pretrained
    directory, run by the execution plan for this CPU (qa/plan.py)."""
    model_dir = Path(model_dir)
    steps = _Steps()
    use_safetensors = _check_model_files(model_dir, options)
    config = read_model_config(model_dir)
    windows = load_windows(model_dir, config, options.graph_cache)
    steps.done("tokenizer")
    flags = cpu_flags()
    plan = resolve_plan(options, flags)
    check_cpu(plan.precision, flags)
    _log_precision_report(model_dir, plan.precision)
    kind = graph_kind(plan.backend, plan.precision)

    graph = find_graph(model_dir, kind, options.graph_cache) if kind is not None else None
    _check_memory(model_dir, kind, graph is not None, options)
    model = None
    if graph is not None:
        # Skipped: the weights and the model's Python class (importing it alone took 2.5 s in the
        # container). Every graph was made from trained weights (the exporter refuses others)
        # and its name hashes them.
        log.info("%s: using the graph %s; the PyTorch weights are not loaded", model_dir, graph)
        steps.done("graph_found")
    else:
        _check_graph_maker(model_dir, kind, options)
        model = load_torch_model(model_dir, use_safetensors, options.inference_threads)
        steps.done("weights")
        if kind is not None:
            try:
                graph = _make_graph(model, model_dir, windows, kind, options)
            except GraphMismatch as exc:
                plan = _torch_instead(plan, options, f"{model_dir} ({architecture(config)})", exc)
            steps.done("graph_made")
    try:
        backend = create_backend(
            plan.backend,
            plan.precision,
            plan.threads,
            model=model,
            graph=graph,
            lanes=plan.lanes,
            adaptive=plan.adaptive,
            warmup=lambda names: example_inputs(windows, names, WARMUP_WIDTHS),
        )
    except Exception as exc:
        raise ModelLoadError(
            f"{model_dir}: the {plan.backend} backend cannot run {graph or 'the model'}: {exc}"
        ) from exc
    steps.done("backend")
    qa_model = QAModel(windows, options, backend, lanes=plan.lanes)
    log.info("%s", plan.describe(backend.batching, options))
    log.info("%s: loaded in %s", model_dir, steps.describe(), extra={"fields": steps.fields()})
    if qa_model.model is None:
        # A graph backend has its own copy of the weights: the PyTorch module (and an export's
        # leftovers) can go, back to the OS, not only to malloc's free lists.
        del model
        gc.collect()
        _return_free_heap_to_os()
    return qa_model


def load_windows(model_dir: Path, config: dict | None = None, converted_dir: Path | None = None) -> Windower:
    """How requests are cut into this model's windows: its own tokenizer and positions."""
    config = read_model_config(model_dir) if config is None else config
    try:
        tokenizer = load_tokenizer(model_dir, converted_dir)
    except TokenizerFilesError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from exc
    log.info("%s: tokenizer from %s", model_dir, tokenizer.source)
    return Windower(tokenizer, config)


def read_model_config(model_dir: Path) -> dict:
    """config.json, refused here when no backend could serve its model: the message names its
    architectures and what is served."""
    path = Path(model_dir) / "config.json"
    config = read_json_object(path, ModelLoadError)
    architectures = config.get("architectures") or []
    problem = None
    if config.get("auto_map"):
        problem = "it needs its own Python code (auto_map: remote code), which this image never runs"
    elif config.get("is_encoder_decoder"):
        problem = "it is an encoder-decoder model"
    elif architectures and not any(QA_HEAD.search(str(name)) for name in architectures):
        problem = "it has no extractive question-answering head"
    if problem:
        raise ModelLoadError(
            f"{path}: cannot serve architectures {architectures} (model_type {config.get('model_type')!r}): "
            f"{problem}. This image serves encoder models with a transformers ...ForQuestionAnswering head; "
            f"tested: {', '.join(TESTED_ARCHITECTURES)}"
        )
    if not architectures:
        log.warning("%s names no architectures; loading it as a question-answering model", path)
    return config


def architecture(config: dict) -> str:
    return ", ".join(config.get("architectures") or []) or str(config.get("model_type"))


def _torch_instead(plan: Plan, options: QAOptions, what: str, exc: GraphMismatch) -> Plan:
    """A graph that disagrees with PyTorch never serves: with QA_BACKEND=auto PyTorch does."""
    if options.backend != "auto":
        raise ModelLoadError(
            f"{what} cannot run on QA_BACKEND={options.backend}: {exc}. Use QA_BACKEND=torch "
            f"(or auto, which falls back to it)"
        ) from exc
    fallback = torch_plan(plan, options, reason="its graph disagreeing with PyTorch")
    log.warning(
        "%s: %s; serving it with PyTorch %s instead of %s %s",
        what,
        exc,
        fallback.precision,
        plan.backend,
        plan.precision,
    )
    return fallback


# What reading the weights (and making a graph from them) imports; the slim image has neither.
GRAPH_MAKER_LIBRARIES = ("torch", "transformers")
MAKE_GRAPHS_HINT = (
    "make the graphs with the full image and ship them in the model's graphs/ directory: "
    "`docker run --rm -v MODEL_DIR:/m FULL_IMAGE python -m qa.graphs export /m` "
    "(or `python -m deploy package --graphs-from-image FULL_IMAGE`)"
)


def _check_graph_maker(model_dir: Path, kind: str | None, options: QAOptions) -> None:
    """A model whose graph is not there, in an image that cannot make graphs (the slim image):
    a start-up error that says how to make it, rather than an ImportError."""
    missing = [name for name in GRAPH_MAKER_LIBRARIES if importlib.util.find_spec(name) is None]
    if not missing:
        return
    if kind is None:
        raise ModelLoadError(
            f"QA_BACKEND={options.backend} runs the model with PyTorch, which this image does not have "
            f"(no {', '.join(missing)}: the slim image serves graphs made ahead of time); use the full "
            f"image, or QA_BACKEND=auto with the model's graphs shipped"
        )
    raise ModelLoadError(
        f"{model_dir}: no {kind} graph for this model ({GRAPH_DIR}/{graph_name(model_dir, kind)} is not "
        f"there, nor in {options.graph_cache}), and this image cannot make one: it has no "
        f"{', '.join(missing)} (the slim image serves graphs made ahead of time). To fix: " + MAKE_GRAPHS_HINT
    )


def _check_memory(model_dir: Path, kind: str | None, graph_found: bool, options: QAOptions) -> None:
    """Before the weights are read: will this load fit in the memory the container has free?"""
    need = load_need_bytes(weight_bytes(model_dir), kind, graph_found)
    hint = ": unload a model or use an instance with more memory"
    if kind is not None and not graph_found:
        hint += (
            "; a model packaged with its graph (python -m qa.graphs export) needs less than half "
            "as much to load"
        )
    check_load_fits(str(model_dir), need, options.memory_check, hint)


class _Steps:
    """How long each loading step took (graph found or made, weights, backend), for the log."""

    def __init__(self):
        self.last = time.monotonic()
        self.started = self.last
        self.seconds: dict[str, float] = {}

    def done(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = now - self.last
        self.last = now

    def describe(self) -> str:
        steps = ", ".join(f"{name.replace('_', ' ')} {s:.2f} s" for name, s in self.seconds.items())
        return f"{self.last - self.started:.2f} s ({steps})"

    def fields(self) -> dict[str, float]:
        return {f"load_{name}_s": round(s, 3) for name, s in self.seconds.items()}


def _check_model_files(model_dir: Path, options: QAOptions) -> bool:
    """Refuses a directory that cannot be served, naming the file and the fix; True when the
    weights are safetensors, False for pickles (allowed by QA_ALLOW_PICKLE_WEIGHTS)."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    present = {p.name for p in model_dir.iterdir()}
    if "config.json" not in present:
        raise ModelLoadError(
            f"{model_dir}/config.json is missing: the model directory must hold the files written by "
            f"save_pretrained (config.json, model.safetensors, tokenizer.json)"
        )
    if not any(name in present for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{model_dir}/tokenizer.json is missing: save the tokenizer next to the model "
            f"(tokenizer.save_pretrained(dir))"
        )
    if any(name in present for name in SAFETENSORS_FILES):
        return True
    if any(name in present for name in PICKLE_FILES):
        if not options.allow_pickle_weights:
            raise ModelLoadError(
                f"{model_dir} holds only pickle weights (pytorch_model.bin), which can run arbitrary code "
                f"when loaded, so they are refused. Convert them to model.safetensors "
                f"(model.save_pretrained(dir)), or set QA_ALLOW_PICKLE_WEIGHTS=true to load them with "
                f"torch.load(weights_only=True)."
            )
        log.warning(
            "loading pickle weights from %s with weights_only=True (QA_ALLOW_PICKLE_WEIGHTS)", model_dir
        )
        return False
    raise ModelLoadError(
        f"{model_dir}/model.safetensors is missing: no model weights found "
        f"(expected model.safetensors or a sharded model.safetensors.index.json)"
    )


def load_torch_model(model_dir: Path, use_safetensors: bool | None, threads: int | None = None):
    """The PyTorch model, refused when its QA head was not trained (random answers). Imported
    here: a model whose graph is found never loads torch or transformers."""
    import torch
    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    from qa.graphs import untrained_weights

    if threads is not None:  # its forward passes, and a graph's export (None: torch's default)
        torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # progress bars garble the JSON log stream

    try:
        model, info = AutoModelForQuestionAnswering.from_pretrained(
            model_dir,
            trust_remote_code=False,
            local_files_only=True,
            use_safetensors=use_safetensors,
            weights_only=True,
            output_loading_info=True,
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load a question-answering model from {model_dir}: {exc}") from exc
    untrained = untrained_weights(model_dir, info)
    if untrained:
        raise ModelLoadError(untrained)
    return model.eval()


def _make_graph(model, model_dir: Path, windows: Windower, kind: str, options: QAOptions) -> Path:
    """The graph of this kind in the cache, made now if no worker made it before. Static int8
    calibrates on the built-in corpus (`python -m qa.graphs export --samples` takes the user's own)."""
    from qa.graphs import find_or_build_graph  # torch, onnx, NNCF: only to make a graph

    try:
        return find_or_build_graph(model, model_dir, windows, kind, options.graph_cache)
    except GraphMismatch:
        raise
    except BackendError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(
            f"cannot make the {kind} graph of {model_dir} in {options.graph_cache}: {exc}"
        ) from exc


def _log_precision_report(model_dir: Path, precision: str) -> None:
    """The stored report's figures for a reduced precision (`deploy package` writes it), so the
    log says what this precision costs on this model."""
    path = model_dir / GRAPH_DIR / REPORT_FILE
    if precision == "fp32" or not path.is_file():
        return
    try:
        line = summary_line(json.loads(path.read_text()), precision)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the precision report %s: %s", path, exc)
        return
    if line:
        log.info("%s", line)


def _return_free_heap_to_os() -> None:
    """glibc keeps freed heap pages for reuse; malloc_trim gives them back. Measured with the
    full-size stand-in, resident after loading: int8 that quantized at start-up 1310 -> 616 MB,
    fp32 ~800 -> ~700 MB."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass
