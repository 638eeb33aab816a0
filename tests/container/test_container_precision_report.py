"""`docker run IMAGE precision-report`: runs on a read-only model mount with the image's own
libraries, and its figures are those a direct computation gives from the same answers, which are
the answers this host's stack gives; on a labeled dev set (SQuAD v2.0 JSON) each precision's exact
match and F1 are those of its own answers against the gold ones."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from targets import TINY_MODEL

pytestmark = pytest.mark.container


def run_report(
    image: str, tmp_path: Path, samples: Path, mount: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """`precision-report MOUNT --json ...` in the image on the tiny model: the run and its JSON."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
         "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp", "-e", "QA_TORCH_THREADS=1",
         "-v", f"{TINY_MODEL}:/opt/ml/model:ro", "-v", f"{samples}:{mount}:ro", "-v", f"{out}:/out",
         image, "precision-report", mount, "--json", "/out/report.json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| int8 | openvino |" in done.stdout or "| int8 | onnx |" in done.stdout, done.stdout
    return done, json.loads((out / "report.json").read_text())


def check_answers_are_the_hosts(tmp_path: Path, bodies: list[dict], answers: dict) -> None:
    """The report's answers are the ones serving gives (here, the host stack with the same libraries)."""
    from qa.loading import load_model
    from qa.request import request_from_object
    from serving.settings import Settings

    settings = Settings(graph_cache_dir=tmp_path / "graphs", inference_threads=1)
    for precision in ("fp32", "bf16", "int8"):
        model = load_model(TINY_MODEL, dataclasses.replace(settings, precision=precision))
        for body, got in zip(bodies, answers[precision], strict=True):
            want = model.predict(request_from_object(body, max_items=1))
            assert (got["answer"], got["start"], got["end"]) == (
                want["answer"],
                want["start"],
                want["end"],
            ), precision
            assert got["score"] == pytest.approx(want["score"], abs=1e-4), precision


def test_the_report_runs_in_the_image_and_its_figures_check_out(image: str, tmp_path) -> None:
    from qa import report as qa_report

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
    done, report = run_report(image, tmp_path, samples, "/samples.jsonl")
    assert report["requests"] == 3 and "/samples.jsonl" in report["source"]
    assert report["labels"] is None and "exact match" not in done.stdout  # no gold answers, no such columns

    # The figures, computed again from the report's answers.
    answers = report["answers"]
    for row in report["rows"][1:]:
        figures = qa_report.compare(answers[row["precision"]], answers["fp32"])
        for key, value in figures.items():
            assert row[key] == pytest.approx(value), key
    check_answers_are_the_hosts(tmp_path, items, answers)


def test_on_a_squad_v2_file_each_precision_gets_exact_match_and_f1(image: str, tmp_path) -> None:
    from qa import report as qa_report

    lighthouse = (
        "The first stone lighthouse, designed by the engineer Matthias Oort, was completed in 1711 and "
        "stood 38 metres tall. Today the harbour is mainly used by ferries and pleasure boats."
    )
    notes = "Ada Lovelace wrote the notes in 1843 in London. They describe an algorithm for the engine."
    questions = {
        lighthouse: [
            ("Who designed the lighthouse?", ["Matthias Oort", "the engineer Matthias Oort"]),
            ("When was the lighthouse completed?", ["1711"]),
            ("Who paid for the lighthouse?", []),  # unanswerable
            ("What is the harbour used for today?", ["ferries and pleasure boats"]),
        ],
        notes: [
            ("Who wrote the notes?", ["Ada Lovelace"]),
            ("What do the notes describe?", ["an algorithm for the engine"]),
            ("Who built the engine?", []),  # unanswerable
        ],
    }
    document = {
        "version": "v2.0",
        "data": [
            {
                "title": "Container",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"q{p}-{n}",
                                "question": question,
                                "answers": [{"text": t, "answer_start": context.index(t)} for t in gold],
                                "is_impossible": not gold,
                            }
                            for n, (question, gold) in enumerate(qas)
                        ],
                    }
                    for p, (context, qas) in enumerate(questions.items())
                ],
            }
        ],
    }
    dev = tmp_path / "dev-v2.0.json"
    dev.write_text(json.dumps(document))
    done, report = run_report(image, tmp_path, dev, "/squad-dev.json")
    assert "| exact match | F1 |" in done.stdout and "(SQuAD v2.0 JSON)" in done.stdout, done.stdout
    assert report["labels"] == "SQuAD v2.0 JSON" and report["handle_impossible_answer"] is True
    golds = [gold for qas in questions.values() for _, gold in qas]
    assert report["requests"] == len(golds) and report["gold"] == golds

    # Each row's scores, computed again from that precision's stored answers and the gold answers.
    for row in report["rows"]:
        predictions = [answer["answer"] for answer in report["answers"][row["precision"]]]
        scores = qa_report.squad_scores(predictions, golds)
        assert row["exact_match"] == pytest.approx(scores["exact_match"]), row["precision"]
        assert row["f1"] == pytest.approx(scores["f1"]), row["precision"]

    bodies = [
        {"question": q, "context": c, "parameters": {"handle_impossible_answer": True}}
        for c, qas in questions.items()
        for q, _ in qas
    ]
    check_answers_are_the_hosts(tmp_path, bodies, report["answers"])
