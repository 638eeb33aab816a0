"""Where a model's graphs live, what they are called and which one each backend runs. No heavy
imports: the serving path finds a graph with this module alone; qa/graphs.py, which makes graphs
(torch, transformers, onnx, NNCF), is imported only when one must be made."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

from qa.backends import BackendError

GRAPH_DIR = "graphs"  # <model_dir>/graphs: where start-up looks before making a graph
ONNX_OPSET = 17
EXPORT_FORMAT = 4  # bump when a making step changes: old graphs stop matching
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")  # config.json and weights (and shard indexes)
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


class GraphMismatch(BackendError):
    """The exported graph computes other logits than PyTorch: it must not serve this model."""


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


def graph_key(model_dir: Path, kind: str, weights: str | None = None) -> str:
    """Hash of the weights and config, the kind and every library that shapes the graph. The
    inputs follow from the model (its forward signature), so the weights and config fix them."""
    libraries = GRAPH_KINDS[kind][1]
    versions = (EXPORT_FORMAT, ONNX_OPSET, *(importlib.metadata.version(name) for name in libraries))
    weights = weights or weights_digest(model_dir)
    return hashlib.sha256(repr((versions, kind, weights)).encode()).hexdigest()[:16]


def graph_name(model_dir: Path, kind: str, weights: str | None = None) -> str:
    return f"qa-{kind}-{graph_key(model_dir, kind, weights)}{GRAPH_KINDS[kind][0]}"


def find_graph(model_dir: Path, kind: str, cache_dir: Path, weights: str | None = None) -> Path | None:
    """A graph of this kind made ahead of time in <model_dir>/graphs, else a cached one, else None."""
    name = graph_name(model_dir, kind, weights)
    for directory in (Path(model_dir) / GRAPH_DIR, Path(cache_dir)):
        if (directory / name).is_file():
            return directory / name
    return None
