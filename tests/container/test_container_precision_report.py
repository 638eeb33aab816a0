"""`docker run IMAGE precision-report`: runs on a read-only model mount with the image's own
libraries, and its figures are those a direct computation gives from the same answers, which are
the answers this host's stack gives."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from targets import TINY_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "code"))

pytestmark = pytest.mark.container


def test_the_report_runs_in_the_image_and_its_figures_check_out(image: str, tmp_path) -> None:
    from qa import report as qa_report
    from qa.loading import load_model
    from qa.request import request_from_object
    from serving.settings import Settings

    samples = tmp_path / "samples.jsonl"
    items = [
        {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843 in London."},
        {
            "question": "Where is the lighthouse?",
            "context": "The lighthouse stands on the cliffs of Valmont.",
        },
        {"question": "When was it built?", "context": "It was built in 1711, designed by Matthias Oort."},
    ]
    samples.write_text("".join(json.dumps({"inputs": item}) + "\n" for item in items))
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
         "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp", "-e", "QA_TORCH_THREADS=1",
         "-v", f"{TINY_MODEL}:/opt/ml/model:ro", "-v", f"{samples}:/samples.jsonl:ro", "-v", f"{out}:/out",
         image, "precision-report", "/samples.jsonl", "--json", "/out/report.json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| int8 | openvino |" in done.stdout or "| int8 | onnx |" in done.stdout, done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["requests"] == 3 and "/samples.jsonl" in report["source"]

    # The figures, computed again from the report's answers.
    answers = report["answers"]
    for row in report["rows"][1:]:
        figures = qa_report.compare(answers[row["precision"]], answers["fp32"])
        for key, value in figures.items():
            assert row[key] == pytest.approx(value), key

    # Those answers are the ones serving gives (here, the host stack with the same libraries).
    settings = Settings(graph_cache_dir=tmp_path / "graphs", torch_threads=1)
    for precision in ("fp32", "bf16", "int8"):
        model = load_model(TINY_MODEL, dataclasses.replace(settings, precision=precision))
        for item, got in zip(items, answers[precision]):
            want = model.predict(request_from_object(item, max_items=1))
            assert (got["answer"], got["start"], got["end"]) == (
                want["answer"],
                want["start"],
                want["end"],
            ), precision
            assert got["score"] == pytest.approx(want["score"], abs=1e-4), precision
