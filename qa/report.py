"""The precision report: what int8 and bf16 cost on this model, against fp32, on this CPU.

    python entrypoint.py precision-report [SAMPLES] [--model-dir DIR] [--json FILE] [--requests N]
    docker run --rm -v "$PWD/model:/opt/ml/model:ro" IMAGE precision-report [/samples.jsonl]

Each precision is loaded as serving would load it (the execution plan for this CPU, qa/plan.py;
QA_* variables apply) and answers the same requests: the first --requests questions of the user's
samples (qa/samples.py: JSON Lines of request bodies, as /invocations takes them, or a labeled dev
set: SQuAD v1.1/v2.0 JSON, or JSON Lines of rows with gold answers) or of the built-in SQuAD-like
corpus. For each reduced precision: the share of top answers equal to fp32's (text and offsets),
the mean token-F1 of its answers against fp32's (SQuAD's normalisation), the largest difference
of a top answer's score, and the time per window (one at a time, with all the threads), measured
round-robin across the precisions so that machine noise hits all alike. With gold answers, every
precision (fp32 too) also gets SQuAD's exact match and F1 (0-100, as its official evaluation
computes them; unanswerable questions are asked with handle_impossible_answer).
`deploy package` stores the JSON next to the graphs it ships; the container logs its line for the
precision it serves.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import logging
import re
import string
import sys
import tempfile
import time
from pathlib import Path

from qa.errors import QAError
from qa.options import QAOptions
from qa.samples import Samples, read_samples

REDUCED = ("bf16", "int8")
TIMING_WINDOWS = 32  # windows timed per precision and round
TIMING_ROUNDS = 3  # the fastest round counts
DEFAULT_REQUESTS = 100
REPORT_SEED = 99  # neither the benchmark's nor calibration's requests


# ---- the figures ------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token-level F1 of two answers (1.0 when both are empty)."""
    got, want = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((collections.Counter(got) & collections.Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def gold_answers(texts: list[str]) -> list[str]:
    """SQuAD 2.0's gold answers of a question: its texts that normalise to something, else [""]
    (no answer, which only an answer normalising to "" matches)."""
    return [text for text in texts if normalize_answer(text)] or [""]


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict:
    """SQuAD's exact match and F1, 0-100: each prediction's best over its question's gold answers,
    averaged over the questions (its official evaluation script, v2.0, which v1.1 files also pass)."""
    exact = f1 = 0.0
    for prediction, texts in zip(predictions, golds):
        gold = gold_answers(texts)
        exact += max(float(normalize_answer(prediction) == normalize_answer(g)) for g in gold)
        f1 += max(token_f1(prediction, g) for g in gold)
    return {"exact_match": 100 * exact / len(golds), "f1": 100 * f1 / len(golds)}


def compare(answers: list[dict], reference: list[dict]) -> dict:
    """The report's figures for one precision's top answers against fp32's, request by request."""
    same = [
        (a["answer"], a["start"], a["end"]) == (r["answer"], r["start"], r["end"])
        for a, r in zip(answers, reference)
    ]
    return {
        "top_answers_equal": sum(same) / len(same),
        "mean_token_f1": sum(token_f1(a["answer"], r["answer"]) for a, r in zip(answers, reference))
        / len(same),
        "max_score_difference": max(abs(a["score"] - r["score"]) for a, r in zip(answers, reference)),
    }


# ---- running it -------------------------------------------------------------------------------


def load_requests(samples: Path | None, count: int) -> tuple[Samples, str]:
    """The first `count` questions (with their gold answers, if the file has them) and where they
    came from."""
    if samples is not None:
        read = read_samples(samples)
        return read.head(count), f"{samples} ({min(len(read.pairs), count)} of {len(read.pairs)} items)"
    from qa.corpus import make_requests

    pairs = [(r.question, r.context) for r in make_requests(count, seed=REPORT_SEED)]
    return Samples(pairs), "the built-in SQuAD-like corpus"


def make_report(model_dir: Path, options: QAOptions, samples: Samples, source: str) -> dict:
    """Loads fp32, bf16 and int8, answers the samples with each, times their windows, compares
    (and scores against the gold answers, if any)."""
    from qa.cpu import cpu_class, cpu_flags, cpu_name

    models = _load_models(model_dir, options)
    requests = _requests(samples)
    answers = {p: [_top(m.predict(r)) for r in requests] for p, m in models.items()}
    windows = [w for r in requests for item in models["fp32"].windows.windows_for(r, 10_000) for w in item][
        :TIMING_WINDOWS
    ]
    best = _time_windows(models, windows)
    rows = []
    for precision, model in models.items():
        row = {
            "precision": precision,
            "backend": model.backend.name.split("-")[0],
            "ms_per_window": best[precision] * 1000,
        }
        row["speed_vs_fp32"] = best["fp32"] / best[precision]
        if precision != "fp32":
            row.update(compare(answers[precision], answers["fp32"]))
        if samples.gold is not None:
            row.update(squad_scores([a["answer"] for a in answers[precision]], samples.gold))
        rows.append(row)
    flags = cpu_flags()
    report = {
        "model_dir": str(model_dir),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "cpu_class": cpu_class(flags),
        "isa": sorted(
            flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
        ),
        "threads": options.inference_threads,
        "source": source,
        "requests": len(samples.pairs),
        "timed_windows": len(windows),
        "labels": samples.labels,
        "handle_impossible_answer": samples.no_answer,
        "rows": rows,
        "answers": answers,
    }
    if samples.gold is not None:
        report["gold"] = samples.gold
    return report


def _load_models(model_dir: Path, options: QAOptions) -> dict:
    from qa.loading import load_model

    models = {}
    for precision in ("fp32", *REDUCED):
        # One lane: each window gets all the threads, whatever the plan shares out under load.
        one_lane = dataclasses.replace(options, precision=precision, parallel_batches=1)
        models[precision] = load_model(model_dir, one_lane)
    return models


def _requests(samples: Samples) -> list:
    """One request per question; with handle_impossible_answer when a question may have none."""
    from qa.request import request_from_object

    parameters = {"parameters": {"handle_impossible_answer": True}} if samples.no_answer else {}
    return [
        request_from_object({"question": q, "context": c, **parameters}, max_items=1)
        for q, c in samples.pairs
    ]


def _time_windows(models: dict, windows: list) -> dict[str, float]:
    """Seconds per window of each precision, one window at a time: the best of the rounds."""
    best = {p: float("inf") for p in models}
    for _ in range(TIMING_ROUNDS):
        for precision, model in models.items():
            model.forward_batch(windows[:1])  # this width's first pass plans kernels
            began = time.perf_counter()
            for window in windows:
                model.forward_batch([window])
            best[precision] = min(best[precision], (time.perf_counter() - began) / len(windows))
    return best


def _top(prediction) -> dict:
    return prediction[0] if isinstance(prediction, list) else prediction


# ---- showing it -------------------------------------------------------------------------------


def render(report: dict) -> str:
    """The report as a Markdown table with a header: what was measured, where (and against which
    gold answers: their columns only when the samples had some)."""
    labeled = report.get("labels") is not None
    lines = [
        f"Precision report for {report['model_dir']}, {report['created']}",
        f"{report['requests']} requests from {report['source']}; speed over {report['timed_windows']} windows, one at a time,",
        f"on {report['cpu']} ({report['cpu_class']} class: {' '.join(report['isa']) or 'flags unknown'}), "
        f"{report['threads']} threads",
    ]
    if labeled:
        lines.append(_labels_line(report))
    gold_heads = ["exact match", "F1"] if labeled else []
    heads = ["precision", "backend", *gold_heads, "top answers equal to fp32", "mean token-F1 vs fp32"]
    heads += ["largest score difference", "ms per window", "speed vs fp32"]
    lines += ["", f"| {' | '.join(heads)} |", "| --- | --- |" + " ---: |" * (len(heads) - 2)]
    for row in report["rows"]:
        lines.append(f"| {' | '.join(_cells(row, labeled))} |")
    return "\n".join(lines)


def _labels_line(report: dict) -> str:
    no_answer = "; unanswerable questions allowed (handle_impossible_answer)"
    return (
        f"exact match and F1 (0-100, as SQuAD's official evaluation) against the file's gold answers "
        f"({report['labels']}){no_answer if report.get('handle_impossible_answer') else ''}"
    )


def _cells(row: dict, labeled: bool) -> list[str]:
    cells = [row["precision"], row["backend"]]
    if labeled:
        cells += [f"{row['exact_match']:.1f}", f"{row['f1']:.1f}"]
    if row["precision"] == "fp32":
        cells += ["(reference)", "", ""]
    else:
        cells += [
            f"{row['top_answers_equal']:.1%}",
            f"{row['mean_token_f1']:.3f}",
            f"{row['max_score_difference']:.4f}",
        ]
    return cells + [f"{row['ms_per_window']:.1f}", f"{row['speed_vs_fp32']:.2f}x"]


def summary_line(report: dict, precision: str) -> str | None:
    """One log line for the precision being served, from a stored report; None if it has none."""
    rows = {r.get("precision"): r for r in report.get("rows", ())}
    row = rows.get(precision)
    if row is None or precision == "fp32":
        return None
    line = (
        f"precision report ({report.get('created')}, {report.get('cpu_class')} CPU, {report.get('requests')} requests "
        f"from {report.get('source')}): {precision} on {row['backend']} gave {row['top_answers_equal']:.1%} of top "
        f"answers equal to fp32, mean token-F1 {row['mean_token_f1']:.3f}, largest score difference "
        f"{row['max_score_difference']:.4f}, {row['speed_vs_fp32']:.2f}x fp32's speed per window"
    )
    reference = rows.get("fp32", {})
    if "exact_match" in row and "exact_match" in reference:
        line += (
            f"; against the file's gold answers, exact match {row['exact_match']:.1f} and "
            f"F1 {row['f1']:.1f} (fp32: {reference['exact_match']:.1f} and {reference['f1']:.1f})"
        )
    return line


def main(argv: list[str], options: QAOptions, default_model_dir: Path, *, cache_named: bool) -> int:
    """The `precision-report` command; `options` from the QA_* variables (the entrypoint's settings).
    Graphs are made in a scratch cache unless one was named (`cache_named`, QA_GRAPH_CACHE_DIR): a
    read-only model mount works."""
    parser = argparse.ArgumentParser(
        description="What int8 and bf16 cost on a QA model against fp32, on this CPU (see the module docstring)."
    )
    parser.add_argument(
        "samples",
        type=Path,
        nargs="?",
        help="JSON Lines of request bodies, or a labeled dev set for exact match and F1: SQuAD v1.1/v2.0 "
        "JSON, or JSON Lines of rows with gold answers (default: built-in corpus)",
    )
    parser.add_argument(
        "--model-dir", type=Path, help="a save_pretrained directory (default: QA_MODEL_DIR, /opt/ml/model)"
    )
    parser.add_argument("--json", type=Path, help="also write the report, with every answer, as JSON here")
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        help=f"questions to answer, the file's first (default {DEFAULT_REQUESTS}; a labeled dev set may want "
        "more for steady scores)",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    model_dir = args.model_dir or default_model_dir
    if args.requests < 1:
        print("error: --requests must be at least 1", file=sys.stderr)
        return 2
    try:
        samples, source = load_requests(args.samples, args.requests)
    except (OSError, QAError) as exc:
        print(f"error: samples {args.samples}: {exc}", file=sys.stderr)
        return 2
    if not samples.pairs:
        print(f"error: samples {args.samples}: no question/context items", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="qa-report-") as scratch:
        try:
            if not cache_named:
                options = dataclasses.replace(options, graph_cache=Path(scratch))
            report = make_report(model_dir, options, samples, source)
        except QAError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0
