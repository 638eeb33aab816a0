"""The benchmark's outputs, per CPU class (what pays depends on the instruction sets):

- bench/results/<class>.json: the raw figures of the latest run on that class of CPU;
- BENCHMARKS.md: one section per class file present (tables, ratios ours/peer, targets, FLOP
  accounting), each headed with its CPU, flags, date and code revision; a run rewrites only its
  own class's file, the other sections are re-rendered from theirs unchanged;
- bench/benchmarks-<class>.png: the chart (throughput and p99 against concurrency), drawn last
  and skipped, loudly, without matplotlib.

    python -m bench.report              # re-render BENCHMARKS.md from bench/results/*.json
    python -m bench.report --charts     # and redraw every class's chart
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from bench import flops
from qa.cpu import cpu_flags, cpu_name

MIB = 2**20
SCHEMA = 2
REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
CHART_DIR = REPO / "bench"
REPORT = REPO / "BENCHMARKS.md"

# The instructions that decide which precision pays (int8 needs VNNI, bf16 its own instructions).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
# Sections in this order (others after, by name).
CLASS_ORDER = ("avx512-vnni-bf16", "avx512-vnni", "avx512", "avx2-vnni", "avx2")
MODEL_SHAPE_KEYS = ("dim", "n_layers", "n_heads", "hidden_dim", "vocab_size")


def cpu_class(flags, arch: str = "x86_64") -> str:
    """The CPU class a run is filed under, from its /proc/cpuinfo flags.

    >>> cpu_class(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    'avx512-vnni-bf16'
    >>> cpu_class(["avx2", "avx512f", "avx512_vnni"]), cpu_class(["avx2"]), cpu_class([], "aarch64")
    ('avx512-vnni', 'avx2', 'aarch64')
    """
    f = set(flags)
    if "avx512f" in f:
        if "avx512_vnni" in f:
            return "avx512-vnni-bf16" if f & {"avx512_bf16", "amx_bf16"} else "avx512-vnni"
        return "avx512"
    if "avx2" in f:
        return "avx2-vnni" if "avx_vnni" in f else "avx2"
    return arch or "unknown"


def machine() -> dict:
    cpu, flags = cpu_name(), cpu_flags()
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    docker = (
        subprocess.run(
            ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if _has("docker")
        else ""
    )
    return {
        "cpu": cpu,
        "cpu_class": cpu_class(flags, platform.machine()),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": docker or "n/a",
    }


def _has(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def ratios(results: list[dict]) -> list[dict]:
    """ours/peer per configuration and concurrency (throughput up is better; latency, CPU down)."""
    peer = next((r for r in results if r["kind"] == "peer" and not r["error"]), None)
    if peer is None:
        return []
    peer_levels = {lv["concurrency"]: lv for lv in peer["levels"]}
    out = []
    for r in results:
        if r["kind"] == "peer" or r["error"]:
            continue
        for lv in r["levels"]:
            base = peer_levels.get(lv["concurrency"])
            if base is None:
                continue
            out.append(
                {
                    "name": r["name"],
                    "concurrency": lv["concurrency"],
                    "rps": _ratio(lv["rps"], base["rps"]),
                    "p50": _ratio(lv["p50_ms"], base["p50_ms"]),
                    "p99": _ratio(lv["p99_ms"], base["p99_ms"]),
                    "cpu_per_req": _ratio(lv["cpu_s_per_req"], base["cpu_s_per_req"]),
                    "startup": _ratio(r.get("startup_s"), peer.get("startup_s")),
                    "peak_memory": _ratio(r.get("peak_memory_bytes"), peer.get("peak_memory_bytes")),
                }
            )
    return out


# --- targets ------------------------------------------------------------------------------------

# The current issue's targets, per CPU class: (configuration, concurrency, figure, op, bound).
# Figures: "rps" and "p99" are ratios ours/peer; "answers" the share of top answers equal to the
# reference's (the fp32 default; the answers are collected at concurrency 4).
TARGETS: dict[str, list[tuple[str, int, str, str, float]]] = {
    "avx512-vnni-bf16": [
        ("int8", 4, "rps", ">=", 4.0),
        ("int8", 4, "answers", ">=", 0.97),
        ("bf16", 4, "rps", ">=", 2.5),
        ("bf16", 4, "answers", ">=", 0.99),
        ("default", 4, "rps", ">=", 1.25),
        ("default", 4, "p99", "<=", 0.8),
    ],
    "avx2": [
        ("default", 4, "rps", ">=", 1.15),
        ("int8", 4, "rps", ">=", 2.5),
    ],
}
# A run that named a target's configuration otherwise: the one configuration with one of these envs.
TARGET_ENVS = {
    "default": [{}],
    "int8": [{"QA_PRECISION": "int8"}, {"QA_BACKEND": "onnx", "QA_PRECISION": "int8"}],
    "bf16": [{"QA_BACKEND": "torch", "QA_PRECISION": "bf16"}, {"QA_PRECISION": "bf16"}],
}
_FIGURE_TEXT = {"rps": "throughput / peer", "p99": "p99 / peer", "answers": "top answers equal to fp32"}


def _target_config(results: list[dict], name: str) -> dict | None:
    ours = [r for r in results if r["kind"] != "peer"]
    named = next((r for r in ours if r["name"] == name), None)
    if named is not None:
        return named
    by_env = [r for r in ours if (r.get("env") or {}) in TARGET_ENVS.get(name, [])]
    return by_env[0] if len(by_env) == 1 else None


def targets(doc: dict) -> list[dict]:
    """The current issue's targets for the doc's CPU class, checked on its figures; a target
    whose configuration the run did not measure is left out."""
    results, cls = doc["results"], doc_class(doc)
    by = {(x["name"], x["concurrency"]): x for x in doc.get("ratios") or []}
    out = []
    for name, concurrency, figure, op, bound in TARGETS.get(cls, []):
        r = _target_config(results, name)
        if r is None:
            continue
        if figure == "answers":
            value = None if r["error"] else r.get("match_default")
        else:
            value = (by.get((r["name"], concurrency)) or {}).get(figure)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        label = name if r["name"] == name else f"{name} (run as `{r['name']}`)"
        out.append(
            {
                "target": f"{label}, c={concurrency}: {_FIGURE_TEXT[figure]}",
                "config": r["name"],
                "concurrency": concurrency,
                "figure": figure,
                "value": value,
                "op": op,
                "bound": bound,
                "met": met,
            }
        )
    return out


# --- one run's document ---------------------------------------------------------------------------


def run_revision(results: list[dict]) -> dict:
    """The code the run measured: the image's revision label, or the work tree's commit (host)."""
    seen: list[tuple[str, str, str]] = []
    for r in results:
        if r["kind"] == "peer":
            continue
        d = r.get("describe") or {}
        rev = d.get("revision") or ""
        key = (rev, d.get("version") or rev[:12], "image label" if r["kind"] == "image" else "work tree")
        if rev and key not in seen:
            seen.append(key)
    if not seen:
        return {"revision": "", "version": "unknown", "from": ""}
    return {
        "revision": " + ".join(k[0] for k in seen),
        "version": " + ".join(k[1] for k in seen),
        "from": seen[0][2],
    }


def add_flop_figures(doc: dict) -> None:
    """Per level: GFLOP per CPU-second and its share of the fp32 ceiling (in place)."""
    ceiling = (doc.get("ceiling") or {}).get("gflops_per_cpu")
    for r in doc["results"]:
        for lv in r.get("levels") or []:
            per_cpu_s = flops.per_cpu_second(lv.get("gflop_per_req"), lv.get("cpu_s_per_req"))
            lv["gflop_per_cpu_s"] = None if per_cpu_s is None else round(per_cpu_s, 2)
            lv["ceiling_share"] = round(per_cpu_s / ceiling, 4) if per_cpu_s is not None and ceiling else None


def build(
    results: list[dict],
    args,
    requests,
    ceiling: dict | None = None,
    flop_info: dict | None = None,
    cls: str | None = None,
) -> dict:
    words = [len(r.context.split()) for r in requests]
    config = json.loads((Path(args.model) / "config.json").read_text())
    m = machine()
    doc = {
        "schema": SCHEMA,
        "cpu_class": cls or m["cpu_class"],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": m,
        "revision": run_revision(results),
        "ceiling": ceiling,
        "flops": {k: v for k, v in flop_info.items() if k not in ("gflop", "tokens_by_index")}
        if flop_info
        else None,
        "settings": {
            "target": args.target,
            "model": str(args.model),
            "concurrency": args.concurrency,
            "model_shape": {k: config.get(k) for k in MODEL_SHAPE_KEYS},
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_requests": args.max_requests,
            "rounds": args.rounds,
            "answers": args.answers,
            "reference": args.reference,
            "requests": len(requests),
            "context_words": [min(words), round(statistics.fmean(words)), max(words)],
            "smoke": args.smoke,
        },
        "results": results,
        "ratios": ratios(results),
    }
    add_flop_figures(doc)
    doc["targets"] = targets(doc)
    return doc


def doc_class(doc: dict) -> str:
    """A results file's class (files from before the per-class layout: from their flags)."""
    return doc.get("cpu_class") or cpu_class((doc.get("machine") or {}).get("isa") or [])


# --- markdown ---------------------------------------------------------------------------------------


def _fmt(value, spec: str = "", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _env_text(env: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items()) or "defaults"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(*names: str, left: int = 1) -> list[str]:
    """A table header; the first `left` columns left-aligned, the rest right-aligned (figures)."""
    return [_row(*names), _row(*(["---"] * left + ["---:"] * (len(names) - left)))]


def _size_text(describe: dict) -> str:
    size = describe.get("size_bytes")
    return f"{size / 1e6:.0f} ({describe.get('size_what', '')})" if size else "—"


RESULT_COLUMNS = (
    "configuration",
    "concurrency",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "CPU s/req",
    "GFLOP/req",
    "GFLOP per CPU-s",
    "of fp32 ceiling",
    "peak memory MiB",
    "start to first answer s",
    "size MB",
)


def _results_table(doc: dict) -> list[str]:
    lines = _header(*RESULT_COLUMNS)
    for r in doc["results"]:
        if r["error"]:
            lines.append(_row(r["name"], "—", f"failed: {r['error']}", *([""] * (len(RESULT_COLUMNS) - 3))))
            continue
        for lv in r["levels"]:
            share = lv.get("ceiling_share")
            lines.append(
                _row(
                    r["name"],
                    lv["concurrency"],
                    _fmt(lv["rps"], ".2f"),
                    _fmt(lv["p50_ms"], ".0f"),
                    _fmt(lv["p95_ms"], ".0f"),
                    _fmt(lv["p99_ms"], ".0f"),
                    f"{lv['errors']}/{lv['requests']}",
                    _fmt(lv["cpu_s_per_req"], ".3f"),
                    _fmt(lv.get("gflop_per_req"), ".2f"),
                    _fmt(lv.get("gflop_per_cpu_s"), ".1f"),
                    "—" if share is None else f"{share:.0%}",
                    f"{lv['peak_memory_bytes'] / MIB:.0f}",
                    _fmt(r.get("startup_s"), ".1f"),
                    _size_text(r.get("describe") or {}),
                )
            )
    lines += ["", "Peak memory per row is the level's peak; over the whole run (start-up included):"]
    lines += [
        f"- {r['name']}: {r.get('peak_memory_bytes', 0) / MIB:.0f} MiB"
        for r in doc["results"]
        if not r["error"]
    ]
    return lines


def _ratio_table(doc: dict) -> list[str]:
    lines = _header(
        "configuration",
        "concurrency",
        "throughput",
        "p50",
        "p99",
        "CPU/req",
        "start to first answer",
        "peak memory",
    )
    for x in doc["ratios"]:
        cells = [
            _fmt(x[k], ".2f") + "x" if x[k] is not None else "—"
            for k in ("rps", "p50", "p99", "cpu_per_req", "startup", "peak_memory")
        ]
        lines.append(_row(x["name"], x["concurrency"], *cells))
    return lines


def _target_value(t: dict, value, bound: bool = False) -> str:
    if value is None:
        return "—"
    if t["figure"] == "answers":
        return f"{value:.0%}" if bound else f"{value:.1%}"
    return f"{value:.2f}"


def _targets_table(rows: list[dict]) -> list[str]:
    lines = _header("target", "this run", "bound", "met")
    for t in rows:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        bound = f"{t['op']} {_target_value(t, t['bound'], bound=True)}"
        lines.append(_row(t["target"], _target_value(t, t["value"]), bound, met))
    return lines


def _answers_table(ours: list[dict], reference: str) -> list[str]:
    lines = _header("configuration", "env", f"same as fp32 {reference}", "same as peer", left=2)
    for r in ours:
        lines.append(
            _row(
                r["name"],
                _env_text(r["env"]),
                _pct(r.get("match_default"), r.get("match_count")),
                _pct(r.get("match_peer"), r.get("match_peer_count")),
            )
        )
    return lines


METHOD = [
    "- Each server is started, polled with a real request until it answers (start to first answer),"
    " loaded, then stopped before the next starts.",
    "- Closed loop: each client sends its next request when the previous one is answered, over a"
    " keep-alive connection; all servers get the same request sequence. Latency percentiles cover"
    " answered requests.",
    "- CPU s/req: utime+stime (children included) from /proc/<pid>/stat, summed over the server's"
    " session (the container's processes for an image), over the measured window, divided by answered"
    " requests.",
    "- GFLOP/req: the model's forward FLOPs for the requests the level answered (their mean), from"
    " `forward_gflop` in `bench/flops.py`: per token and layer 4·d·d (Q, K, V and output projections)"
    " + 2·d·h (FFN) + 2·s·d (attention scores and the weighted sum of V) multiply-adds, plus the qa"
    " head's 2·d, at 2 FLOP per multiply-add; d, h and the layers from the model's config.json, s the"
    " request's tokens (question + context + special tokens, from the model's tokenizer.json, capped"
    " at 384: this corpus's requests fit in one window). Useful work only: padding a batch to its"
    " longest request, embeddings, LayerNorm, softmax and GELU are not counted. The same count for"
    " every configuration, whatever precision it computes in.",
    "- GFLOP per CPU-s: GFLOP/req / CPU s/req, the model arithmetic done per second of CPU the whole"
    " server spent (HTTP, JSON, tokenisation, Python, batching and padding, the forward pass).",
    "- fp32 ceiling: measured in the same run before any server starts, in a child process: the best"
    " single-thread GFLOP/s of a 2048x2048 fp32 `torch.mm` over about 2 s, i.e. GFLOP/s per CPU."
    ' "of fp32 ceiling" is GFLOP per CPU-s over it: how close the serving stack comes to what one CPU'
    " does in fp32. int8 and bf16 configurations are counted in the same FLOPs, so they can pass 100%.",
    "- Memory: summed PSS from /proc/<pid>/smaps_rollup over the same processes, sampled every 0.5 s.",
    "- The load generator (Python threads, http.client) shares the CPUs with the server, for peer and"
    " ours alike.",
    "- Peer: `torch==2.13.0 transformers==4.57.6 sagemaker-huggingface-inference-toolkit==2.6.0"
    " multi-model-server==1.1.11`, OpenJDK 17, 2 MMS workers, started by"
    " `mms_model_server.start_model_server()` as in the Hugging Face container; its size is its venv on"
    " disk (the real container image is larger).",
    "- CPU class: from /proc/cpuinfo's flags: `avx512-vnni-bf16` (avx512f, avx512_vnni and"
    " avx512_bf16 or amx_bf16), `avx512-vnni`, `avx512`, `avx2-vnni` (avx_vnni), `avx2`. A run writes"
    " `bench/results/<class>.json` and its chart `bench/benchmarks-<class>.png`, and renders this file"
    " from every class file present.",
    "",
    "Reproduce (`pip install -r requirements-dev.txt` first; the stand-in model is built when missing):",
    "",
    "    python -m bench.run --target image:TAG --build --rounds 2 --config default= \\",
    "        --config int8=QA_PRECISION=int8 --config bf16=QA_PRECISION=bf16 \\",
    "        --config torch-fp32=QA_BACKEND=torch",
    "",
    "The targets look for the configurations by these names (or, failing that, for the one"
    " configuration whose env is the name's: `QA_PRECISION=int8` or `QA_BACKEND=onnx,QA_PRECISION=int8`;"
    " `QA_PRECISION=bf16` or `QA_BACKEND=torch,QA_PRECISION=bf16`; no env for `default`)."
    " `python -m bench.run --help` for the rest; `python -m bench.report` re-renders this file from"
    " `bench/results/*.json`.",
    "",
]


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
    dims = ", ".join(f"{k} {shape[k]}" for k in MODEL_SHAPE_KEYS if k in shape)  # JSON sorts the keys
    return (
        f"{what} ({dims}; `bench/make_standin_model.py`, seeded random weights: real timings, junk answers)"
    )


def _pct(share, count) -> str:
    return "—" if share is None else f"{share:.1%} of {count}"


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


def _flops_text(doc: dict) -> str | None:
    info = doc.get("flops")
    if not info:
        return None
    if "error" in info:
        return f"FLOP per request: not computed ({info['error']})."
    low, mean, high = info["tokens"]
    over = info.get("over_max_seq") or 0
    tail = f"; {over} request(s) over {info['max_seq']} tokens, counted as one window" if over else ""
    return (
        f"FLOP per request: {low}-{high} tokens (mean {mean}) per request, question + context, so"
        f" {info['gflop_per_req_corpus']:.2f} GFLOP per request over the corpus{tail}."
    )


def section(doc: dict, chart_rel: str | None) -> list[str]:
    """One CPU class's section: a function of its own results file (and chart) only."""
    m, s = doc["machine"], doc["settings"]
    low, mean, high = s["context_words"]
    cls = doc_class(doc)
    rev = doc.get("revision") or {}
    source = f", {rev['from']}" if rev.get("from") else ""
    recorded = f"; results recorded in commit {rev['recorded_in']}" if rev.get("recorded_in") else ""
    lines = [
        f"## CPU class `{cls}`: {m['cpu']}, {doc['date'][:10]}, code {_revision_text(doc)}",
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
    ]
    flops_line = _flops_text(doc)
    if flops_line:
        lines.append(flops_line)
    if s.get("smoke"):
        lines += ["", "**Smoke run (small model, seconds per level): checks the harness, not the servers.**"]
    if chart_rel:
        lines += ["", f"![{cls}: throughput and p99 latency against concurrency]({chart_rel})"]
    lines += ["", "### Results", ""] + _results_table(doc)
    if doc.get("ratios"):
        lines += [
            "",
            "### Ours / peer",
            "",
            "Throughput above 1 is better; latency, CPU per request, start-up and memory below 1 are better.",
            "",
        ]
        lines += _ratio_table(doc)
    target_rows = targets(doc)
    if target_rows:
        lines += ["", f"### Targets on `{cls}`", ""] + _targets_table(target_rows)
    ours = [r for r in doc["results"] if r["kind"] != "peer" and not r["error"] and "match_default" in r]
    if ours:
        lines += [
            "",
            "### Answers",
            "",
            f"Top answer (text, start, end) equal on the first {s['answers']}"
            " requests, answered at concurrency 4.",
            "",
        ]
        lines += _answers_table(ours, s.get("reference", "default"))
    lines += ["", "### Configurations", ""]
    for r in doc["results"]:
        d = r.get("describe") or {}
        extra = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("size_bytes", "size_what") and v)
        lines.append(f"- **{r['name']}** ({r['kind']}): {_env_text(r['env'])}; {extra}")
    return lines


def _class_key(cls: str) -> tuple[int, str]:
    return (CLASS_ORDER.index(cls) if cls in CLASS_ORDER else len(CLASS_ORDER), cls)


def load_all(results_dir: Path) -> list[dict]:
    """Every class file in `results_dir`, in CLASS_ORDER."""
    docs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            doc_class(doc), doc["date"], doc["results"]  # the keys every section needs
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(
                f"bench: RESULTS FILE LEFT OUT of the report: {path}: {type(exc).__name__}: {exc}", flush=True
            )
            continue
        docs.append(doc)
    return sorted(docs, key=lambda d: _class_key(doc_class(d)))


def chart_path(chart_dir: Path, cls: str) -> Path:
    return Path(chart_dir) / f"benchmarks-{cls}.png"


def side_reports(results_dir: Path) -> dict[str, list[str]]:
    """The other benchmarks' sections (`bench/results/<class>.<name>.md`, from bench/batch.py and
    bench/overload.py), by class, shown under the class's own section."""
    sides: dict[str, list[str]] = {}
    for path in sorted(Path(results_dir).glob("*.*.md")):
        sides.setdefault(path.name.split(".")[0], []).append(path.read_text().rstrip("\n"))
    return sides


def write_side_report(name: str, title: str, body: list[str], results_dir: Path = RESULTS_DIR) -> Path:
    """One benchmark's section for this machine's class, headed with the date and the code it ran;
    BENCHMARKS.md is re-rendered to show it."""
    cls = machine()["cpu_class"]
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    head = [
        f"### {title}",
        "",
        f"{cpu_name()}, {dt.date.today().isoformat()}, code `{commit or 'unknown'}`.",
        "",
    ]
    path = Path(results_dir) / f"{cls}.{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + body) + "\n")
    render(results_dir, REPORT, CHART_DIR)
    print(f"bench: wrote {path} and {REPORT}", flush=True)
    return path


def markdown(
    docs: list[dict], md_path: Path, chart_dir: Path, sides: dict[str, list[str]] | None = None
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "One section per CPU class measured: what pays (int8 needs VNNI, bf16 its own instructions)"
        " depends on the instruction sets, so each class keeps the table of its own latest run"
        " (`bench/results/<class>.json`). A run rewrites only its own class's section; the others stay"
        " as they were measured, each headed with its date and the code revision it measured, which may"
        " be older than the newest section's.",
        "",
    ]
    lines += _header(
        "CPU class", "CPU", "instruction sets", "measured", "code", "fp32 ceiling GFLOP/s per CPU", left=6
    )
    for doc in docs:
        ceiling = (doc.get("ceiling") or {}).get("gflops_per_cpu")
        lines.append(
            _row(
                f"`{doc_class(doc)}`",
                doc["machine"]["cpu"],
                ", ".join(doc["machine"].get("isa") or ["none"]),
                doc["date"],
                f"`{_revision_text(doc)}`",
                "not measured" if ceiling is None else f"{ceiling:.1f}",
            )
        )
    if not docs:
        lines.append("")
        lines.append("No results yet: `python -m bench.run` writes `bench/results/<class>.json`.")
    for doc in docs:
        chart = chart_path(chart_dir, doc_class(doc))
        rel = os.path.relpath(chart, Path(md_path).parent) if chart.exists() else None
        lines += [""] + section(doc, rel)
        for side in (sides or {}).get(doc_class(doc), []):
            lines += ["", side]
    lines += ["", "## Method", ""] + METHOD
    return "\n".join(lines)


def render(results_dir: Path, md_path: Path, chart_dir: Path) -> None:
    """BENCHMARKS.md from every class file in `results_dir`."""
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(load_all(results_dir), md_path, chart_dir, side_reports(results_dir)))


# --- chart --------------------------------------------------------------------------------------------


def chart(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in doc["results"]:
        if r["error"] or not r["levels"]:
            continue
        xs = [lv["concurrency"] for lv in r["levels"]]
        style = dict(color="black", linestyle="--", marker="s") if r["kind"] == "peer" else dict(marker="o")
        label = "peer (HF toolkit + MMS)" if r["kind"] == "peer" else f"ours: {r['name']}"
        ax_rps.plot(xs, [lv["rps"] for lv in r["levels"]], label=label, **style)
        ax_p99.plot(xs, [lv["p99_ms"] for lv in r["levels"]], label=label, **style)
    for ax, title, ylabel in ((ax_rps, "Throughput", "requests/s"), (ax_p99, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ticks = doc["settings"]["concurrency"]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrency (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    if ax_rps.lines:
        ax_rps.legend(fontsize=8)
    m = doc["machine"]
    shape = doc["settings"].get("model_shape") or {}
    model = f"dim {shape.get('dim')}, {shape.get('n_layers')} layers"
    fig.suptitle(
        f"DistilBERT QA ({model}), {doc_class(doc)}: {m['cpu']}, {m['usable_cpus']} CPUs,"
        f" {doc['date']}, code {_revision_text(doc)}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_chart(doc: dict, path: Path) -> bool:
    """The chart, or one loud line saying why not; never raises (the figures are already written)."""
    try:
        chart(doc, path)
    except ImportError as exc:
        reason = f"{exc.name or 'matplotlib'} is not installed ({exc}): pip install -r requirements-dev.txt"
    except Exception as exc:  # a chart must never lose a run
        reason = f"{type(exc).__name__}: {exc}"
    else:
        return True
    print(f"bench: CHART SKIPPED ({path.name}): {reason}; the JSON and the markdown are written", flush=True)
    return False


# --- writing a run --------------------------------------------------------------------------------------


def write_json(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    part.replace(path)


def write(doc: dict, results_dir: Path, md_path: Path, chart_dir: Path) -> Path:
    """The run's class file first, then BENCHMARKS.md from all class files, then the chart
    (then the markdown once more, to show it). Returns the class file."""
    cls = doc_class(doc)
    json_path = Path(results_dir) / f"{cls}.json"
    write_json(doc, json_path)
    chart_file = chart_path(chart_dir, cls)
    chart_file.unlink(missing_ok=True)  # it shows this class's previous run
    render(results_dir, md_path, chart_dir)
    print(f"bench: wrote {json_path} and {md_path}", flush=True)
    if draw_chart(doc, chart_file):
        render(results_dir, md_path, chart_dir)
        print(f"bench: wrote {chart_file}", flush=True)
    return json_path


def summary_text(doc: dict) -> str:
    ceiling = _ceiling_text(doc).replace("**", "")
    lines = ["", f"bench: CPU class {doc_class(doc)}; fp32 ceiling: {ceiling}"]
    lines += ["bench: ours / peer:"] if doc["ratios"] else []
    for x in doc["ratios"]:
        figures = "  ".join(
            f"{label} {_fmt(x[k], '.2f')}x"
            for label, k in (
                ("throughput", "rps"),
                ("p50", "p50"),
                ("p99", "p99"),
                ("CPU/req", "cpu_per_req"),
                ("start", "startup"),
                ("memory", "peak_memory"),
            )
        )
        lines.append(f"  {x['name']:>12} c={x['concurrency']:<3} {figures}")
    flop_levels = [lv for r in doc["results"] for lv in r.get("levels") or [] if lv.get("gflop_per_cpu_s")]
    lines += ["bench: FLOP accounting:"] if flop_levels else []
    for r in doc["results"]:
        for lv in r.get("levels") or []:
            if lv.get("gflop_per_cpu_s") is not None:
                share = lv.get("ceiling_share")
                lines.append(
                    f"  {r['name']:>12} c={lv['concurrency']:<3} {lv['gflop_per_req']:.2f} GFLOP/req,"
                    f" {lv['cpu_s_per_req']:.3f} CPU s/req, {lv['gflop_per_cpu_s']:.1f} GFLOP per CPU-s"
                    + ("" if share is None else f" ({share:.0%} of the fp32 ceiling)")
                )
    lines += ["bench: targets:"] if targets(doc) else []
    for t in targets(doc):
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        bound = f"{t['op']} {_target_value(t, t['bound'], bound=True)}"
        lines.append(f"  target {t['target']}: {_target_value(t, t['value'])} ({bound}) {met}")
    for r in doc["results"]:
        if "match_default" in r:
            lines.append(
                f"  answers {r['name']}: same as fp32 default"
                f" {_pct(r.get('match_default'), r.get('match_count'))},"
                f" same as peer {_pct(r.get('match_peer'), r.get('match_peer_count'))}"
            )
        if r["error"]:
            lines.append(f"  {r['name']} FAILED: {r['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="the class files (default: bench/results)"
    )
    p.add_argument(
        "--report", type=Path, default=REPORT, help="the markdown written (default: BENCHMARKS.md)"
    )
    p.add_argument("--chart-dir", type=Path, default=CHART_DIR, help="where benchmarks-<class>.png live")
    p.add_argument("--charts", action="store_true", help="redraw every class's chart first")
    args = p.parse_args(argv)
    if args.charts:
        for doc in load_all(args.results_dir):
            draw_chart(doc, chart_path(args.chart_dir, doc_class(doc)))
    render(args.results_dir, args.report, args.chart_dir)
    print(f"bench: wrote {args.report} from {len(load_all(args.results_dir))} class file(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
