"""The precision report: what int8 and bf16 cost on this model, against fp32, on this CPU.

    python entrypoint.py precision-report [SAMPLES.jsonl] [--model-dir DIR] [--json FILE] [--requests N]
    docker run --rm -v "$PWD/model:/opt/ml/model:ro" IMAGE precision-report [/samples.jsonl]

Each precision is loaded as serving would load it (the execution plan for this CPU, qa/plan.py;
QA_* variables apply) and answers the same requests: the user's samples (JSON Lines of request
bodies, as /invocations takes them) or the built-in SQuAD-like corpus. For each reduced precision:
the share of top answers equal to fp32's (text and offsets), the mean token-F1 of its answers
against fp32's (SQuAD's normalisation), the largest difference of a top answer's score, and the
time per window (one at a time, with all the threads), measured round-robin across the precisions
so that machine noise hits all alike.
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


def load_requests(samples: Path | None, count: int) -> tuple[list[tuple[str, str]], str]:
    """(question, context) pairs and where they came from."""
    if samples is not None:
        from qa.graphs import sample_pairs

        pairs = sample_pairs(samples)
        return pairs[:count], f"{samples} ({min(len(pairs), count)} of {len(pairs)} items)"
    from qa.corpus import make_requests

    return [
        (r.question, r.context) for r in make_requests(count, seed=REPORT_SEED)
    ], "the built-in SQuAD-like corpus"


def make_report(model_dir: Path, options: QAOptions, pairs: list[tuple[str, str]], source: str) -> dict:
    """Loads fp32, bf16 and int8, answers `pairs` with each, times their windows, compares."""
    from qa.cpu import cpu_flags, cpu_name
    from qa.loading import load_model
    from qa.plan import cpu_class
    from qa.request import request_from_object

    models = {}
    for precision in ("fp32", *REDUCED):
        # One lane: each window gets all the threads, whatever the plan shares out under load.
        one_lane = dataclasses.replace(options, precision=precision, parallel_batches=1)
        models[precision] = load_model(model_dir, one_lane)
    requests = [request_from_object({"question": q, "context": c}, max_items=1) for q, c in pairs]
    answers = {p: [_top(m.predict(r)) for r in requests] for p, m in models.items()}

    windows = [w for r in requests for item in models["fp32"].windows.windows_for(r, 10_000) for w in item][
        :TIMING_WINDOWS
    ]
    best = {p: float("inf") for p in models}
    for _ in range(TIMING_ROUNDS):
        for precision, model in models.items():
            model.forward_batch(windows[:1])  # this width's first pass plans kernels
            began = time.perf_counter()
            for window in windows:
                model.forward_batch([window])
            best[precision] = min(best[precision], (time.perf_counter() - began) / len(windows))

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
        rows.append(row)
    flags = cpu_flags()
    return {
        "model_dir": str(model_dir),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "cpu_class": cpu_class(flags),
        "isa": sorted(
            flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
        ),
        "threads": options.torch_threads,
        "source": source,
        "requests": len(pairs),
        "timed_windows": len(windows),
        "rows": rows,
        "answers": answers,
    }


def _top(prediction) -> dict:
    return prediction[0] if isinstance(prediction, list) else prediction


# ---- showing it -------------------------------------------------------------------------------


def render(report: dict) -> str:
    """The report as a Markdown table with a header: what was measured, where."""
    lines = [
        f"Precision report for {report['model_dir']}, {report['created']}",
        f"{report['requests']} requests from {report['source']}; speed over {report['timed_windows']} windows, one at a time,",
        f"on {report['cpu']} ({report['cpu_class']} class: {' '.join(report['isa']) or 'flags unknown'}), "
        f"{report['threads']} threads",
        "",
        "| precision | backend | top answers equal to fp32 | mean token-F1 vs fp32 | largest score difference | ms per window | speed vs fp32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        if row["precision"] == "fp32":
            figures = ["(reference)", "", ""]
        else:
            figures = [
                f"{row['top_answers_equal']:.1%}",
                f"{row['mean_token_f1']:.3f}",
                f"{row['max_score_difference']:.4f}",
            ]
        lines.append(
            f"| {row['precision']} | {row['backend']} | {' | '.join(figures)} | {row['ms_per_window']:.1f} | "
            f"{row['speed_vs_fp32']:.2f}x |"
        )
    return "\n".join(lines)


def summary_line(report: dict, precision: str) -> str | None:
    """One log line for the precision being served, from a stored report; None if it has none."""
    row = next((r for r in report.get("rows", ()) if r.get("precision") == precision), None)
    if row is None or precision == "fp32":
        return None
    return (
        f"precision report ({report.get('created')}, {report.get('cpu_class')} CPU, {report.get('requests')} requests "
        f"from {report.get('source')}): {precision} on {row['backend']} gave {row['top_answers_equal']:.1%} of top "
        f"answers equal to fp32, mean token-F1 {row['mean_token_f1']:.3f}, largest score difference "
        f"{row['max_score_difference']:.4f}, {row['speed_vs_fp32']:.2f}x fp32's speed per window"
    )


def main(argv: list[str], options: QAOptions, default_model_dir: Path, *, cache_named: bool) -> int:
    """The `precision-report` command; `options` from the QA_* variables (the entrypoint's settings).
    Graphs are made in a scratch cache unless one was named (`cache_named`, QA_GRAPH_CACHE_DIR): a
    read-only model mount works."""
    parser = argparse.ArgumentParser(
        description="What int8 and bf16 cost on a QA model against fp32, on this CPU (see the module docstring)."
    )
    parser.add_argument(
        "samples", type=Path, nargs="?", help="JSON Lines of request bodies (default: built-in corpus)"
    )
    parser.add_argument(
        "--model-dir", type=Path, help="a save_pretrained directory (default: QA_MODEL_DIR, /opt/ml/model)"
    )
    parser.add_argument("--json", type=Path, help="also write the report, with every answer, as JSON here")
    parser.add_argument(
        "--requests",
        type=int,
        default=DEFAULT_REQUESTS,
        help=f"requests to answer (default {DEFAULT_REQUESTS})",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    model_dir = args.model_dir or default_model_dir
    if args.requests < 1:
        print("error: --requests must be at least 1", file=sys.stderr)
        return 2
    try:
        pairs, source = load_requests(args.samples, args.requests)
    except (OSError, QAError) as exc:
        print(f"error: samples {args.samples}: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"error: samples {args.samples}: no question/context items", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="qa-report-") as scratch:
        try:
            if not cache_named:
                options = dataclasses.replace(options, graph_cache=Path(scratch))
            report = make_report(model_dir, options, pairs, source)
        except QAError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0
