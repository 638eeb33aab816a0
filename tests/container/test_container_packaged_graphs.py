"""`deploy package --onnx-from-image`: ONNX graphs exported by the image itself, shipped in
model.tar.gz, are what a container serving that archive uses, so no instance exports at start-up
(nor loads the PyTorch weights)."""

from __future__ import annotations

import tarfile

import pytest
import requests
from target import ContainerTarget
from targets import TINY_MODEL

from deploy import package

pytestmark = pytest.mark.container

QUESTION = {"inputs": {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843."}}


def answer(target: ContainerTarget) -> dict:
    resp = requests.post(f"{target.base_url}/invocations", json=QUESTION, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_graphs_exported_by_the_image_are_used_at_start_up(image: str, containers, tmp_path) -> None:
    graphs = package.export_graphs(image, TINY_MODEL, tmp_path / "graphs", ["fp32", "int8"])
    assert sorted(name.split("-")[1] for name in graphs) == ["fp32", "int8"], graphs
    archive = tmp_path / "model.tar.gz"
    package.build_archive(TINY_MODEL, archive, extra=graphs)
    model = tmp_path / "extracted"  # as SageMaker extracts model.tar.gz into /opt/ml/model
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(model, filter="data")

    answers = {}
    for precision in ("fp32", "int8"):
        target = containers(image, model, {"QA_PRECISION": precision})
        answers[precision] = answer(target)
        logs = target.logs()
        assert f"using ONNX graph /opt/ml/model/onnx/qa-{precision}-" in logs, logs[-3000:]
        assert "exported ONNX graph" not in logs, logs[-3000:]
        assert "the PyTorch weights are not loaded" in logs, logs[-3000:]
        target.stop()

    # The same graphs as a start-up export would make: same answer as a container without them.
    plain = containers(image, TINY_MODEL)
    assert answer(plain) == answers["fp32"]
    assert "exported ONNX graph" in plain.logs()
