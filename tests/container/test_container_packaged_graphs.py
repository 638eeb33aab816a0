"""`deploy package --graphs-from-image`: graphs made by the image itself, shipped in model.tar.gz
with the precision report, are what a container serving that archive uses, so no instance makes
them at start-up (nor loads the PyTorch weights), and the report's line for the precision served
is logged."""

from __future__ import annotations

import json
import tarfile

import pytest
import requests
from target import ContainerTarget
from targets import TINY_MODEL

from deploy import package

pytestmark = pytest.mark.container

QUESTION = {
    "inputs": {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843."}
}


def answer(target: ContainerTarget) -> dict:
    resp = requests.post(f"{target.base_url}/invocations", json=QUESTION, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_graphs_made_by_the_image_are_used_at_start_up(image: str, containers, tmp_path) -> None:
    lines = []
    graphs = package.export_graphs(
        image, TINY_MODEL, tmp_path / "graphs", ["fp32", "bf16", "int8"], log=lines.append
    )
    kinds = sorted(
        name.split("-", 1)[1].rsplit("-", 1)[0] for name in graphs if name.endswith((".onnx", ".xml"))
    )
    assert kinds == ["fp32", "int8-dynamic", "int8-static"], graphs
    report = json.loads(graphs["graphs/precision-report.json"].read_text())
    assert [row["precision"] for row in report["rows"]] == ["fp32", "bf16", "int8"]
    assert "| int8 |" in lines[-1]  # the table was shown
    archive = tmp_path / "model.tar.gz"
    package.build_archive(TINY_MODEL, archive, extra=graphs)
    model = tmp_path / "extracted"  # as SageMaker extracts model.tar.gz into /opt/ml/model
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(model, filter="data")

    answers = {}
    for precision in ("fp32", "int8"):
        # QA_BACKEND=openvino: the same plan whichever CPU class runs this test.
        target = containers(image, model, {"QA_PRECISION": precision, "QA_BACKEND": "openvino"})
        answers[precision] = answer(target)
        logs = target.logs()
        kind = "int8-static" if precision == "int8" else "fp32"
        assert f"using the graph /opt/ml/model/graphs/qa-{kind}-" in logs, logs[-3000:]
        assert "made the" not in logs, logs[-3000:]
        assert "the PyTorch weights are not loaded" in logs, logs[-3000:]
        assert ("precision report (" in logs) == (precision == "int8"), logs[-3000:]
        target.stop()

    # The same graphs as start-up would make: the same answer as a container without them.
    plain = containers(image, TINY_MODEL, {"QA_BACKEND": "openvino"})
    assert answer(plain) == answers["fp32"]
    assert "made the fp32 graph" in plain.logs()
