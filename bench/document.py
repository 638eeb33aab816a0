"""A bench.run's document: the data of one run on one class of CPU, written as
bench/results/<class>.json (render.py makes the Markdown from it).

The class is the instruction-set class a run is filed under (`isa_class`): finer than the
execution plan's `qa.cpu.cpu_class` (avx512 or avx2), because which precision pays depends on
VNNI and bf16 instructions, not only on AVX-512.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
from pathlib import Path

from bench import flops, targets
from qa.cpu import cpu_flags, cpu_name

SCHEMA = 3  # 3: `isa_class` (was `cpu_class`), kernel CPU and serving overhead per level
REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
# The instructions that decide which precision pays (int8 needs VNNI, bf16 its own instructions).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
# Sections in this order (others after, by name).
CLASS_ORDER = ("avx512-vnni-bf16", "avx512-vnni", "avx512", "avx2-vnni", "avx2")
MODEL_SHAPE_KEYS = ("dim", "n_layers", "n_heads", "hidden_dim", "vocab_size")


def isa_class(flags, arch: str = "x86_64") -> str:
    """The instruction-set class a run is filed under, from its /proc/cpuinfo flags.

    >>> isa_class(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
    'avx512-vnni-bf16'
    >>> isa_class(["avx2", "avx512f", "avx512_vnni"]), isa_class(["avx2"]), isa_class([], "aarch64")
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
    flags = cpu_flags()
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    docker = ""
    if shutil.which("docker"):
        docker = subprocess.run(
            ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "cpu": cpu_name(),
        "isa_class": isa_class(flags, platform.machine()),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": docker or "n/a",
    }


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a is not None and b else None


RATIO_KEYS = {"rps": "rps", "p50": "p50_ms", "p99": "p99_ms", "cpu_per_req": "cpu_s_per_req"}


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
            if base is not None:
                out.append(
                    {
                        "name": r["name"],
                        "concurrency": lv["concurrency"],
                        **{k: _ratio(lv[key], base[key]) for k, key in RATIO_KEYS.items()},
                        "startup": _ratio(r.get("startup_s"), peer.get("startup_s")),
                        "peak_memory": _ratio(r.get("peak_memory_bytes"), peer.get("peak_memory_bytes")),
                    }
                )
    return out


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


def add_derived_figures(doc: dict) -> None:
    """Per level (in place): GFLOP per CPU-second and its share of the fp32 ceiling, and the
    serving overhead: the server's CPU per request over the kernel's, less one."""
    ceiling = (doc.get("ceiling") or {}).get("gflops_per_cpu")
    for r in doc["results"]:
        for lv in r.get("levels") or []:
            per_cpu_s = flops.per_cpu_second(lv.get("gflop_per_req"), lv.get("cpu_s_per_req"))
            lv["gflop_per_cpu_s"] = None if per_cpu_s is None else round(per_cpu_s, 2)
            lv["ceiling_share"] = round(per_cpu_s / ceiling, 4) if per_cpu_s is not None and ceiling else None
            kernel = lv.get("kernel_cpu_s_per_req")
            lv["serving_overhead"] = round(lv["cpu_s_per_req"] / kernel - 1, 4) if kernel else None


def run_settings(args, requests) -> dict:
    words = [len(r.context.split()) for r in requests]
    config = json.loads((Path(args.model) / "config.json").read_text())
    return {
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
        "kernel": args.kernel,
    }


def build(results, args, requests, ceiling=None, flop_info=None, cls: str | None = None) -> dict:
    m = machine()
    doc = {
        "schema": SCHEMA,
        "isa_class": cls or m["isa_class"],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": m,
        "revision": run_revision(results),
        "ceiling": ceiling,
        "flops": {k: v for k, v in flop_info.items() if k not in ("gflop", "tokens_by_index")}
        if flop_info
        else None,
        "settings": run_settings(args, requests),
        "results": results,
        "ratios": ratios(results),
    }
    add_derived_figures(doc)
    doc["targets"] = targets.check(doc)
    return doc


def write_json(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    part.replace(path)


def class_key(cls: str) -> tuple[int, str]:
    return (CLASS_ORDER.index(cls) if cls in CLASS_ORDER else len(CLASS_ORDER), cls)


def load_runs(results_dir: Path) -> list[dict]:
    """Every class's run document (`<class>.json`) in `results_dir`, in CLASS_ORDER."""
    docs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if "." in path.stem:  # another benchmark's (`<class>.<benchmark>.json`)
            continue
        try:
            doc = json.loads(path.read_text())
            doc["isa_class"], doc["date"], doc["results"]  # the keys every section needs
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(
                f"bench: RESULTS FILE LEFT OUT of the report: {path}: {type(exc).__name__}: {exc}", flush=True
            )
            continue
        docs.append(doc)
    return sorted(docs, key=lambda d: class_key(d["isa_class"]))


def load_side_runs(results_dir: Path) -> dict[str, list[dict]]:
    """The other benchmarks' documents (`<class>.<benchmark>.json`: footprint, batch, overload), by class."""
    sides: dict[str, list[dict]] = {}
    for path in sorted(Path(results_dir).glob("*.*.json")):
        sides.setdefault(path.name.split(".")[0], []).append(json.loads(path.read_text()))
    return sides


def code_revision() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def write_side_run(benchmark: str, data: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """Another benchmark's figures as `<class>.<benchmark>.json`, with the CPU, date and code."""
    cls = machine()["isa_class"]
    doc = {
        "benchmark": benchmark,
        "isa_class": cls,
        "cpu": cpu_name(),
        "date": dt.date.today().isoformat(),
        "code": code_revision() or "unknown",
        **data,
    }
    path = Path(results_dir) / f"{cls}.{benchmark}.json"
    write_json(doc, path)
    return path
