"""The precision report (qa/report.py): its figures against a direct computation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from qa import report as qa_report
from qa.loading import load_model
from qa.options import QAOptions
from qa.request import request_from_object
from serving.settings import Settings


@pytest.mark.parametrize(
    "prediction,reference,f1",
    [
        ("the Eiffel Tower", "Eiffel Tower", 1.0),  # articles and case do not count
        ("Paris, France", "paris", 2 * (1 / 2) * 1 / (1 / 2 + 1)),  # precision 1/2, recall 1
        ("in 1843", "1843 and 1844", 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)),
        ("Ada", "Lovelace", 0.0),
        ("", "", 1.0),  # both "no answer"
        ("", "Ada", 0.0),
    ],
)
def test_token_f1_is_squads(prediction, reference, f1):
    assert qa_report.token_f1(prediction, reference) == pytest.approx(f1)


def test_compare_counts_answers_text_and_offsets():
    ref = [
        {"answer": "Ada", "start": 0, "end": 3, "score": 0.5},
        {"answer": "in 1843", "start": 9, "end": 16, "score": 0.2},
    ]
    got = [
        {"answer": "Ada", "start": 0, "end": 3, "score": 0.45},
        {"answer": "1843", "start": 12, "end": 16, "score": 0.3},
    ]
    figures = qa_report.compare(got, ref)
    assert figures["top_answers_equal"] == 0.5
    assert figures["mean_token_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert figures["max_score_difference"] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def report(qa_model_dir, tmp_path_factory):
    settings = Settings(graph_cache_dir=tmp_path_factory.mktemp("graphs"), inference_threads=1)
    samples, source = qa_report.load_requests(None, 12)
    return qa_report.make_report(qa_model_dir, settings, samples, source), settings, samples.pairs


def test_the_report_gives_the_answers_serving_gives_and_figures_from_them(qa_model_dir, report):
    made, settings, pairs = report
    assert [row["precision"] for row in made["rows"]] == ["fp32", "bf16", "int8"]
    # No gold answers, no such figures (qa/test_qa_report_labeled.py has them).
    assert made["labels"] is None and "gold" not in made and not made["handle_impossible_answer"]
    assert not any("exact_match" in row or "f1" in row for row in made["rows"])
    direct = {}
    for precision in ("fp32", "bf16", "int8"):
        model = load_model(qa_model_dir, dataclasses.replace(settings, precision=precision))
        direct[precision] = [
            model.predict(request_from_object({"question": q, "context": c}, max_items=1)) for q, c in pairs
        ]
        assert made["answers"][precision] == direct[precision]
    for row in made["rows"][1:]:
        answers, reference = direct[row["precision"]], direct["fp32"]
        equal = sum(
            (a["answer"], a["start"], a["end"]) == (r["answer"], r["start"], r["end"])
            for a, r in zip(answers, reference)
        )
        assert row["top_answers_equal"] == pytest.approx(equal / len(pairs))
        assert row["max_score_difference"] == pytest.approx(
            max(abs(a["score"] - r["score"]) for a, r in zip(answers, reference))
        )
        assert 0 <= row["mean_token_f1"] <= 1
        assert row["ms_per_window"] > 0 and row["speed_vs_fp32"] == pytest.approx(
            made["rows"][0]["ms_per_window"] / row["ms_per_window"]
        )


def test_the_report_renders_and_logs_one_line_per_precision(report):
    made, _, _ = report
    table = qa_report.render(made)
    assert table.count("\n| ") == 5 and "| int8 |" in table and made["cpu_class"] in table
    assert "exact match" not in table and "gold" not in table
    line = qa_report.summary_line(json.loads(json.dumps(made)), "int8")
    assert line.startswith("precision report (") and "int8 on" in line and "\n" not in line
    assert qa_report.summary_line(made, "fp32") is None


def test_the_command_refuses_bad_samples_with_one_line(tmp_path, capsys):
    samples = tmp_path / "s.jsonl"
    samples.write_text("{not json\n")
    assert qa_report.main([str(samples)], QAOptions(), tmp_path, cache_named=False) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: samples") and "JSON" in err and "Traceback" not in err
