"""BENCHMARKS.md from the benchmarks' JSON documents in bench/results/, one section per
instruction-set class (what pays depends on the instruction sets):

- `<class>.json`: bench.run's figures (document.py), shown as tables, ratios ours/peer, targets
  (targets.json), FLOP accounting and serving overhead;
- `<class>.<benchmark>.json`: bench.footprint's, bench.batch's and bench.overload's, each shown
  by its module's `markdown(doc)` under its class's section.

Every table goes through bench/tables.py. A run rewrites only its own class's files; the other
sections are re-rendered from theirs unchanged.

    python -m bench.render              # re-render BENCHMARKS.md from bench/results/*.json
    python -m bench.render --charts     # and redraw every class's chart
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from bench import chart, document, targets
from bench.document import ISA_FLAGS, MODEL_SHAPE_KEYS, REPO, RESULTS_DIR
from bench.tables import Column, table, times

MIB = 2**20
CHART_DIR = REPO / "bench"
REPORT = REPO / "BENCHMARKS.md"
METHOD = Path(__file__).with_name("method.md")
INTRO = (
    "One section per instruction-set class measured: what pays (int8 needs VNNI, bf16 its own instructions)"
    " depends on the instruction sets, so each class keeps the table of its own latest run"
    " (`bench/results/<class>.json`). A run rewrites only its own class's section; the others stay"
    " as they were measured, each headed with its date and the code revision it measured, which may"
    " be older than the newest section's."
)


def _env_text(env: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items()) or "defaults"


def _size_text(describe: dict) -> str | None:
    size = describe.get("size_bytes")
    return f"{size / 1e6:.0f} ({describe.get('size_what', '')})" if size else None


def _share(value: float) -> str:
    return f"{value:.0%}"


RESULT_COLUMNS = [
    Column("configuration", "name", left=True),
    Column("concurrency", "concurrency"),
    Column("req/s", "rps", ".2f"),
    Column("p50 ms", "p50_ms", ".0f"),
    Column("p95 ms", "p95_ms", ".0f"),
    Column("p99 ms", "p99_ms", ".0f"),
    Column("errors", lambda lv: f"{lv['errors']}/{lv['requests']}"),
    Column("CPU s/req", "cpu_s_per_req", ".3f"),
    Column("kernel CPU s/req", "kernel_cpu_s_per_req", ".3f"),
    Column("serving overhead", "serving_overhead", ".1%"),
    Column("GFLOP/req", "gflop_per_req", ".2f"),
    Column("GFLOP per CPU-s", "gflop_per_cpu_s", ".1f"),
    Column("of fp32 ceiling", "ceiling_share", _share),
    Column("peak memory MiB", lambda lv: lv["peak_memory_bytes"] / MIB, ".0f"),
    Column("start to first answer s", "startup_s", ".1f"),
    Column("size MB", lambda lv: _size_text(lv["describe"])),
]
RATIO_COLUMNS = [
    Column("configuration", "name", left=True),
    Column("concurrency", "concurrency"),
    *(
        Column(title, key, times)
        for title, key in (
            ("throughput", "rps"),
            ("p50", "p50"),
            ("p99", "p99"),
            ("CPU/req", "cpu_per_req"),
            ("start to first answer", "startup"),
            ("peak memory", "peak_memory"),
        )
    ),
]
CLASS_COLUMNS = [
    Column("class", lambda d: f"`{d['isa_class']}`", left=True),
    Column("CPU", lambda d: d["machine"]["cpu"], left=True),
    Column("instruction sets", lambda d: ", ".join(d["machine"].get("isa") or ["none"]), left=True),
    Column("measured", "date", left=True),
    Column("code", lambda d: f"`{_revision_text(d)}`", left=True),
    Column("fp32 ceiling GFLOP/s per CPU", lambda d: (d.get("ceiling") or {}).get("gflops_per_cpu"), ".1f"),
]


def _pct(share, count) -> str | None:
    return None if share is None else f"{share:.1%} of {count}"


def _answer_columns(reference: str) -> list[Column]:
    return [
        Column("configuration", "name", left=True),
        Column("env", lambda r: _env_text(r["env"]), left=True),
        Column(f"same as fp32 {reference}", lambda r: _pct(r.get("match_default"), r.get("match_count"))),
        Column("same as peer", lambda r: _pct(r.get("match_peer"), r.get("match_peer_count"))),
    ]


def _level_rows(doc: dict) -> list[dict]:
    """One row per configuration and level: the level's figures and the configuration's."""
    return [
        {**lv, "name": r["name"], "startup_s": r.get("startup_s"), "describe": r.get("describe") or {}}
        for r in doc["results"]
        if not r["error"]
        for lv in r["levels"]
    ]


def _results(doc: dict) -> list[str]:
    lines = table(_level_rows(doc), RESULT_COLUMNS)
    lines += [f"- **{r['name']} failed**: {r['error']}" for r in doc["results"] if r["error"]]
    lines += [
        f"- {r['name']}: kernel not measured: {r['kernel_error']}"
        for r in doc["results"]
        if r.get("kernel_error")
    ]
    lines += ["", "Peak memory per row is the level's peak; over the whole run (start-up included):"]
    lines += [
        f"- {r['name']}: {r.get('peak_memory_bytes', 0) / MIB:.0f} MiB"
        for r in doc["results"]
        if not r["error"]
    ]
    return lines


def _isa_text(isa: list[str] | None) -> str:
    if isa is None:
        return "not recorded"
    missing = [f for f in ISA_FLAGS if f not in isa]
    return ", ".join(isa or ["none"]) + (f" (not: {', '.join(missing)})" if missing else "")


def _model_text(settings: dict) -> str:
    shape = settings.get("model_shape") or {}
    full = shape.get("dim") == 768 and shape.get("n_layers") == 6
    what = (
        "the full-size stand-in for distilbert-base-uncased-distilled-squad"
        if full
        else "a small DistilBERT (harness check only)"
    )
    dims = ", ".join(f"{k} {shape[k]}" for k in MODEL_SHAPE_KEYS if k in shape)
    return (
        f"{what} ({dims}; `bench/make_standin_model.py`, seeded random weights: real timings, junk answers)"
    )


def _revision_text(doc: dict) -> str:
    return (doc.get("revision") or {}).get("version") or "unknown"


def _ceiling_text(doc: dict) -> str:
    ceiling = doc.get("ceiling")
    if not ceiling:
        return "not measured (this run predates the FLOP accounting: re-run this class to fill the GFLOP columns)"
    if ceiling.get("gflops_per_cpu") is None:
        return f"not measured ({ceiling.get('error', 'unknown error')})"
    return (
        f"**{ceiling['gflops_per_cpu']:.1f} GFLOP/s per CPU** ({ceiling.get('what', 'torch.mm fp32')},"
        f" median {ceiling.get('gflops_median')}, torch {ceiling.get('torch')}; measured in this run"
        " before the servers)"
    )


def _flops_text(doc: dict) -> list[str]:
    info = doc.get("flops")
    if not info:
        return []
    if "error" in info:
        return [f"FLOP per request: not computed ({info['error']})."]
    low, mean, high = info["tokens"]
    over = info.get("over_max_seq") or 0
    tail = f"; {over} request(s) over {info['max_seq']} tokens, counted as one window" if over else ""
    return [
        f"FLOP per request: {low}-{high} tokens (mean {mean}) per request, question + context, so"
        f" {info['gflop_per_req_corpus']:.2f} GFLOP per request over the corpus{tail}."
    ]


def _kernel_text(doc: dict) -> list[str]:
    s = doc["settings"]
    if not s.get("kernel"):
        return ["Kernel CPU: not measured in this run (no serving overhead column)."]
    where = (
        "on the host, in its own process" if s["target"] == "host" else "on the host's venv, not in the image"
    )
    return [
        f"Kernel CPU: each configuration's forward passes measured alone {where}, with the same model"
        " directory, settings and batching, after its server stopped (Method)."
    ]


def _heading(doc: dict) -> list[str]:
    m, s = doc["machine"], doc["settings"]
    low, mean, high = s["context_words"]
    rev = doc.get("revision") or {}
    source = f", {rev['from']}" if rev.get("from") else ""
    recorded = f"; results recorded in commit {rev['recorded_in']}" if rev.get("recorded_in") else ""
    return [
        f"## Class `{doc['isa_class']}`: {m['cpu']}, {doc['date'][:10]}, code {_revision_text(doc)}",
        "",
        f"Measured {doc['date']} with the code at revision `{_revision_text(doc)}`"
        f" ({rev.get('revision') or 'unknown'}{source}{recorded}).",
        f"CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cpus']} usable), {m['memory_gib']} GiB,"
        f" Linux {m['kernel']}, Python {m['python']}, Docker {m['docker']}.",
        f"Instruction sets that matter here: {_isa_text(m.get('isa'))}.",
        f"fp32 ceiling: {_ceiling_text(doc)}.",
        f"Model: {_model_text(s)} at `{s['model']}`.",
        f"Load: closed loop on 127.0.0.1, {s['requests']} SQuAD-like requests (contexts of {low}-{high}"
        f" words, mean {mean}), {s['warmup_s']:g} s warm-up then {s['duration_s']:g} s measured per level,"
        f" servers one at a time, peer and ours alternating, {s['rounds']} round(s) (medians)."
        f" Target for ours: `{s['target']}`.",
        *_flops_text(doc),
        *_kernel_text(doc),
    ]


def section(doc: dict, chart_rel: str | None) -> list[str]:
    """One class's section: a function of its own results file (and chart) only."""
    s, cls = doc["settings"], doc["isa_class"]
    lines = _heading(doc)
    if s.get("smoke"):
        lines += ["", "**Smoke run (small model, seconds per level): checks the harness, not the servers.**"]
    if chart_rel:
        lines += ["", f"![{cls}: throughput and p99 latency against concurrency]({chart_rel})"]
    lines += ["", "### Results", ""] + _results(doc)
    if doc.get("ratios"):
        lines += ["", "### Ours / peer", ""]
        lines += [
            "Throughput above 1 is better; latency, CPU per request, start-up and memory below 1 are better."
        ]
        lines += [""] + table(doc["ratios"], RATIO_COLUMNS)
    target_rows = targets.check(doc)
    if target_rows:
        lines += ["", f"### Targets on `{cls}`", ""] + targets.markdown(target_rows)
    ours = [r for r in doc["results"] if r["kind"] != "peer" and not r["error"] and "match_default" in r]
    if ours:
        lines += ["", "### Answers", ""]
        lines += [
            f"Top answer (text, start, end) equal on the first {s['answers']} requests, answered at concurrency 4."
        ]
        lines += [""] + table(ours, _answer_columns(s.get("reference", "default")))
    lines += ["", "### Configurations", ""]
    for r in doc["results"]:
        d = r.get("describe") or {}
        extra = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("size_bytes", "size_what") and v)
        lines.append(f"- **{r['name']}** ({r['kind']}): {_env_text(r['env'])}; {extra}")
    return lines


def side_section(doc: dict) -> list[str]:
    """Another benchmark's section: its module's TITLE and markdown(doc), headed with where and when."""
    module = importlib.import_module(f"bench.{doc['benchmark']}")
    note = f" ({doc['note']})" if doc.get("note") else ""
    head = [f"### {module.TITLE}", "", f"{doc['cpu']}, {doc['date']}, code `{doc['code']}`{note}.", ""]
    return head + module.markdown(doc)


def markdown(runs: list[dict], sides: dict[str, list[dict]], md_path: Path, chart_dir: Path) -> str:
    lines = ["# Benchmarks", "", INTRO, ""] + table(runs, CLASS_COLUMNS)
    if not runs:
        lines += ["", "No results yet: `python -m bench.run` writes `bench/results/<class>.json`."]
    for doc in runs:
        path = chart.chart_path(chart_dir, doc["isa_class"])
        rel = os.path.relpath(path, Path(md_path).parent) if path.exists() else None
        lines += [""] + section(doc, rel)
        for side in sides.get(doc["isa_class"], []):
            lines += [""] + side_section(side)
    lines += ["", "## Method", "", METHOD.read_text().rstrip("\n"), ""]
    return "\n".join(lines)


def render(results_dir: Path = RESULTS_DIR, md_path: Path = REPORT, chart_dir: Path = CHART_DIR) -> None:
    """BENCHMARKS.md from every class's documents in `results_dir`."""
    runs, sides = document.load_runs(results_dir), document.load_side_runs(results_dir)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(runs, sides, md_path, chart_dir))


def write_run(doc: dict, results_dir: Path, md_path: Path, chart_dir: Path) -> Path:
    """The run's class file first, then its chart (never raises), then BENCHMARKS.md from all
    class files. Returns the class file."""
    cls = doc["isa_class"]
    json_path = Path(results_dir) / f"{cls}.json"
    document.write_json(doc, json_path)
    chart_file = chart.chart_path(chart_dir, cls)
    chart_file.unlink(missing_ok=True)  # it shows this class's previous run
    drawn = chart.draw_chart(doc, chart_file)
    render(results_dir, md_path, chart_dir)
    print(f"bench: wrote {json_path}, {md_path}" + (f" and {chart_file}" if drawn else ""), flush=True)
    return json_path


def publish_side_run(benchmark: str, data: dict) -> Path:
    """Another benchmark's figures into bench/results/<class>.<benchmark>.json, and BENCHMARKS.md."""
    path = document.write_side_run(benchmark, data)
    render()
    print(f"bench: wrote {path} and {REPORT}", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__.splitlines()[0])
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="the JSON documents (default: bench/results)"
    )
    p.add_argument(
        "--report", type=Path, default=REPORT, help="the markdown written (default: BENCHMARKS.md)"
    )
    p.add_argument("--chart-dir", type=Path, default=CHART_DIR, help="where benchmarks-<class>.png live")
    p.add_argument("--charts", action="store_true", help="redraw every class's chart first")
    args = p.parse_args(argv)
    runs = document.load_runs(args.results_dir)
    if args.charts:
        for doc in runs:
            chart.draw_chart(doc, chart.chart_path(args.chart_dir, doc["isa_class"]))
    render(args.results_dir, args.report, args.chart_dir)
    print(f"bench: wrote {args.report} from {len(runs)} class file(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
