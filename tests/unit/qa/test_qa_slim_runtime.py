"""What lets the slim image (no torch, transformers, onnx or NNCF) serve graphs the full image
made: it names them as the full image does, from the versions recorded at build time, and a model
whose graph is missing is a load error that says how to make it. Also: the slim requirements are
pinned once, in requirements.txt, and name no graph maker."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

import pytest

from qa import graph_files, loading
from qa.errors import ModelLoadError
from qa.options import QAOptions

ROOT = Path(__file__).resolve().parents[3]
GRAPH_MAKERS = {"torch", "transformers", "nncf", "onnx", "optimum"}


def without_libraries(monkeypatch, missing: set[str]) -> None:
    """This interpreter as the slim image sees it: `missing` not installed."""
    version, find_spec = importlib.metadata.version, importlib.util.find_spec

    def fake_version(name: str) -> str:
        if name in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return version(name)

    monkeypatch.setattr(importlib.metadata, "version", fake_version)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else find_spec(name, *a)
    )


def test_graphs_are_named_from_the_recorded_versions_as_the_full_image_names_them(
    qa_model_dir, tmp_path, monkeypatch
):
    names = {kind: graph_files.graph_name(qa_model_dir, kind) for kind in graph_files.GRAPH_KINDS}
    versions = graph_files.builder_versions()
    recorded = tmp_path / "builder_versions.json"
    recorded.write_text(json.dumps(versions))
    monkeypatch.setattr(graph_files, "BUILDER_VERSIONS_FILE", recorded)
    without_libraries(monkeypatch, GRAPH_MAKERS)
    assert {kind: graph_files.graph_name(qa_model_dir, kind) for kind in graph_files.GRAPH_KINDS} == names

    # Another version recorded is another graph: never one made by other libraries.
    recorded.write_text(json.dumps({**versions, "torch": "0.0.1"}))
    assert graph_files.graph_name(qa_model_dir, "fp32") != names["fp32"]


def test_a_library_neither_installed_nor_recorded_is_a_load_error_naming_both(tmp_path, monkeypatch):
    monkeypatch.setattr(graph_files, "BUILDER_VERSIONS_FILE", tmp_path / "absent.json")
    without_libraries(monkeypatch, {"torch"})
    with pytest.raises(ModelLoadError, match=r"torch is not installed and .*absent\.json does not record"):
        graph_files.library_version("torch")


def test_a_missing_graph_without_a_graph_maker_says_how_to_make_it(qa_model_dir, tmp_path, monkeypatch):
    options = QAOptions(graph_cache=tmp_path)
    loading._check_graph_maker(qa_model_dir, "int8-static", options)  # torch here: it makes the graph

    recorded = tmp_path / "builder_versions.json"
    recorded.write_text(json.dumps(graph_files.builder_versions()))
    monkeypatch.setattr(graph_files, "BUILDER_VERSIONS_FILE", recorded)
    without_libraries(monkeypatch, {"torch", "transformers"})
    with pytest.raises(ModelLoadError) as missing:
        loading._check_graph_maker(qa_model_dir, "int8-static", options)
    message = str(missing.value)
    assert "no int8-static graph for this model" in message and "no torch, transformers" in message
    assert "python -m qa.graphs export /m" in message and "--graphs-from-image" in message

    with pytest.raises(ModelLoadError, match="QA_BACKEND=torch runs the model with PyTorch"):
        loading._check_graph_maker(qa_model_dir, None, QAOptions(backend="torch", graph_cache=tmp_path))


def requirements(path: Path) -> dict[str, str]:
    """{lower-case name: the requirement} of a requirements file, comments and blanks left out."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[=<>\[ ;]", line, maxsplit=1)[0].lower(): line for line in lines if line}


def test_the_slim_requirements_are_pinned_in_requirements_txt_and_name_no_graph_maker():
    slim = requirements(ROOT / "requirements-slim.txt")
    pinned = requirements(ROOT / "requirements.txt")
    assert slim, "requirements-slim.txt names nothing"
    assert [name for name in slim if "==" not in pinned.get(name, "")] == []
    assert [line for line in slim.values() if line.lower() != line.lower().split("=")[0]] == []  # names only
    assert sorted(set(slim) & GRAPH_MAKERS) == []
