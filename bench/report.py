"""The benchmark's outputs: BENCHMARKS.md (tables, ratios ours/peer, targets, machine), a PNG
chart (throughput and p99 against concurrency, ours vs peer) and the raw figures as JSON."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

MIB = 2**20


# The instructions that decide which precision pays (int8 needs VNNI, bf16 its own instructions).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def machine() -> dict:
    cpu = "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
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


def targets(ratio_rows: list[dict], results: list[dict]) -> list[dict]:
    """Issue 5's proof, checked on this run's figures."""
    by = {(x["name"], x["concurrency"]): x for x in ratio_rows}
    out = []

    def check(what: str, row: dict | None, field: str, op: str, bound: float) -> None:
        value = row.get(field) if row else None
        ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"target": what, "value": value, "bound": f"{op} {bound}", "met": ok})

    check("default, c=4: throughput / peer", by.get(("default", 4)), "rps", ">=", 1.5)
    check("default, c=4: p99 / peer", by.get(("default", 4)), "p99", "<=", 0.7)
    check("default, c=1: p50 / peer", by.get(("default", 1)), "p50", "<=", 0.7)
    for r in results:
        env = r.get("env") or {}
        if env.get("QA_BACKEND") == "onnx" and env.get("QA_PRECISION") == "int8":
            check(f"{r['name']}, c=4: throughput / peer", by.get((r["name"], 4)), "rps", ">=", 3.5)
    default = next((x for x in ratio_rows if x["name"] == "default"), None)
    check("default: start to first answer / peer", default, "startup", "<=", 1.0)
    check("default: peak memory / peer", default, "peak_memory", "<=", 1.0)
    return out


def build(results: list[dict], args, requests) -> dict:
    words = [len(r.context.split()) for r in requests]
    ratio_rows = ratios(results)
    config = json.loads((Path(args.model) / "config.json").read_text())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {
            "target": args.target,
            "model": str(args.model),
            "concurrency": args.concurrency,
            "model_shape": {
                k: config.get(k) for k in ("dim", "n_layers", "n_heads", "hidden_dim", "vocab_size")
            },
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "max_requests": args.max_requests,
            "rounds": args.rounds,
            "answers": args.answers,
            "requests": len(requests),
            "context_words": [min(words), round(statistics.fmean(words)), max(words)],
            "smoke": args.smoke,
        },
        "results": results,
        "ratios": ratio_rows,
        "targets": targets(ratio_rows, results),
    }


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


def _results_table(doc: dict) -> list[str]:
    lines = _header(
        "configuration",
        "concurrency",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "CPU s/req",
        "peak memory MiB",
        "start to first answer s",
        "size MB",
    )
    for r in doc["results"]:
        if r["error"]:
            lines.append(_row(r["name"], "—", f"failed: {r['error']}", *([""] * 8)))
            continue
        for lv in r["levels"]:
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


def _targets_table(doc: dict) -> list[str]:
    lines = _header("target", "this run", "bound", "met")
    for t in doc["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(_row(t["target"], _fmt(t["value"], ".2f"), t["bound"], met))
    return lines


def _answers_table(ours: list[dict]) -> list[str]:
    lines = _header("configuration", "env", "same as fp32 default", "same as peer", left=2)
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
    "- Memory: summed PSS from /proc/<pid>/smaps_rollup over the same processes, sampled every 0.5 s.",
    "- The load generator (Python threads, http.client) shares the CPUs with the server, for peer and"
    " ours alike.",
    "- Peer: `torch==2.13.0 transformers==4.57.6 sagemaker-huggingface-inference-toolkit==2.6.0"
    " multi-model-server==1.1.11`, OpenJDK 17, 2 MMS workers, started by"
    " `mms_model_server.start_model_server()` as in the Hugging Face container; its size is its venv on"
    " disk (the real container image is larger).",
    "",
    "Reproduce: `python -m bench.run --target image:TAG --config default= --config NAME=KEY=VALUE,...`",
    "(`python -m bench.run --help`; raw figures in `bench/benchmarks.json`).",
    "",
]


def markdown(doc: dict, chart_rel: str) -> str:
    m, s = doc["machine"], doc["settings"]
    low, mean, high = s["context_words"]
    lines = [
        "# Benchmarks",
        "",
        f"Run {doc['date']} on {m['cpu']}, {m['cores']} cores ({m['usable_cpus']} usable),"
        f" {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, Docker {m['docker']}.",
        f"CPU instructions that matter here: {_isa_text(m.get('isa'))}.",
        f"Model: {_model_text(s)} at `{s['model']}`.",
        f"Load: closed loop on 127.0.0.1, {s['requests']} SQuAD-like requests (contexts of {low}-{high}"
        f" words, mean {mean}), {s['warmup_s']:g} s warm-up then {s['duration_s']:g} s measured per level,"
        f" servers one at a time, peer and ours alternating, {s['rounds']} round(s) (medians)."
        f" Target for ours: `{s['target']}`.",
    ]
    if s.get("smoke"):
        lines += ["", "**Smoke run (small model, seconds per level): checks the harness, not the servers.**"]
    lines += ["", f"![throughput and p99 latency against concurrency]({chart_rel})", "", "## Results", ""]
    lines += _results_table(doc)
    if doc["ratios"]:
        lines += [
            "",
            "## Ours / peer",
            "",
            "Throughput above 1 is better; latency, CPU per request, start-up and memory below 1 are better.",
            "",
        ]
        lines += _ratio_table(doc)
    if doc["ratios"] and doc["targets"]:
        lines += ["", "## Targets (issue 5)", ""] + _targets_table(doc)
    ours = [r for r in doc["results"] if r["kind"] != "peer" and not r["error"] and "match_default" in r]
    if ours:
        lines += [
            "",
            "## Answers",
            "",
            f"Top answer (text, start, end) equal on the first {s['answers']}"
            " requests, answered at concurrency 4.",
            "",
        ]
        lines += _answers_table(ours)
    lines += ["", "## Configurations", ""]
    for r in doc["results"]:
        d = r.get("describe") or {}
        extra = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("size_bytes", "size_what") and v)
        lines.append(f"- **{r['name']}** ({r['kind']}): {_env_text(r['env'])}; {extra}")
    lines += ["", "## Method", ""] + METHOD
    return "\n".join(lines)


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
    dims = ", ".join(f"{k} {v}" for k, v in shape.items())
    return (
        f"{what} ({dims}; `bench/make_standin_model.py`, seeded random weights: real timings, junk answers)"
    )


def _pct(share, count) -> str:
    return "—" if share is None else f"{share:.1%} of {count}"


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
    fig.suptitle(f"DistilBERT QA ({model}), {m['cpu']}, {m['usable_cpus']} CPUs, {doc['date']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(doc: dict, md_path: Path, chart_path: Path, json_path: Path) -> None:
    md_path.parent.mkdir(parents=True, exist_ok=True)
    chart(doc, chart_path)
    rel = os.path.relpath(chart_path, md_path.parent)
    md_path.write_text(markdown(doc, rel))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def summary_text(doc: dict) -> str:
    lines = ["", "bench: ours / peer:"]
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
    for t in doc["targets"] if doc["ratios"] else []:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"  target {t['target']}: {_fmt(t['value'], '.2f')} ({t['bound']}) {met}")
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
