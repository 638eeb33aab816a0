"""Where a model's graphs live, what they are called and which one each backend runs. No heavy
imports: the serving path finds a graph with this module alone; qa/graphs.py, which makes graphs
(torch, transformers, onnx, NNCF), is imported only when one must be made."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

from qa.backends import BackendError
from qa.errors import ModelLoadError
from qa.json_files import read_json_object

GRAPH_DIR = "graphs"  # <model_dir>/graphs: where start-up looks before making a graph
ONNX_OPSET = 17
EXPORT_FORMAT = 5  # bump when a making step changes: old graphs stop matching
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
# The slim image has no torch, transformers, onnx or NNCF, yet must name graphs as the full image
# made them: its build writes here the versions the full image has (`python -m qa.graph_files`).
BUILDER_VERSIONS_FILE = Path(__file__).with_name("builder_versions.json")


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
    versions = (EXPORT_FORMAT, ONNX_OPSET, *(library_version(name) for name in libraries))
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


def library_version(name: str) -> str:
    """The installed version of a library that shapes graphs, else the one the image's graph
    maker has (the slim image records it at build time)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        recorded = read_json_object(BUILDER_VERSIONS_FILE, ModelLoadError, missing_ok=True)
    if not isinstance(recorded.get(name), str):
        raise ModelLoadError(
            f"cannot name the graphs made for this model: {name} is not installed and "
            f"{BUILDER_VERSIONS_FILE} does not record the version graphs were made with"
        )
    return recorded[name]


def builder_versions() -> dict[str, str]:
    """The versions of every library that shapes a graph, as installed here (the full image)."""
    names = sorted({name for _, libraries in GRAPH_KINDS.values() for name in libraries})
    return {name: importlib.metadata.version(name) for name in names}


if __name__ == "__main__":  # the Dockerfile: the full image's versions, for the slim image
    json.dump(builder_versions(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
