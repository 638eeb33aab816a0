"""Overload: closed-loop load far past one worker's threads, ours against the peer, in one run.

    python -m bench.overload --image distilbert-qa:latest [--duration 20]

Runs `bench.run` into build/overload/ (its own report there): the peer, then ours with one worker
at fp32 and int8, and fp32 with a 5 s budget (`SAGEMAKER_MODEL_SERVER_TIMEOUT=5`), whose queue
admits only what 5 s answer, so that c=256 is past the budget; each at c=16, 64 and 256. Then
writes bench/results/<class>.overload.json, shown in BENCHMARKS.md under this CPU class: per
configuration and level the answered requests per second, the error answers, the p99 latency, the
throughput against the configuration's own c=16 and the p99 against the peer's at the same level.
Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json

from bench import render
from bench import run as bench_run
from bench.document import REPO
from bench.tables import Column, table, times

OUT = REPO / "build" / "overload"
CONFIGS = {
    "fp32": "SAGEMAKER_MODEL_SERVER_WORKERS=1",
    "int8": "QA_PRECISION=int8,SAGEMAKER_MODEL_SERVER_WORKERS=1",
    "fp32-5s-budget": "SAGEMAKER_MODEL_SERVER_WORKERS=1,SAGEMAKER_MODEL_SERVER_TIMEOUT=5",
}
LEVELS = "16,64,256"


TITLE = "Overload: far past one worker's threads"
LEVEL_KEYS = ("concurrency", "rps", "errors", "requests", "p99_ms")


def _rows(results: list[dict]) -> list[dict]:
    """Per server and level: the figures, the throughput against its own first level, the p99 against the peer's."""
    peer = next((r for r in results if r["kind"] == "peer"), None)
    peer_p99 = {lv["concurrency"]: lv.get("p99_ms") for lv in (peer or {}).get("levels", [])}
    rows = []
    for r in results:
        base = r["levels"][0]["rps"] if r["levels"] else 0.0
        for lv in r["levels"]:
            theirs = peer_p99.get(lv["concurrency"]) if r is not peer else None
            rows.append(
                {
                    **lv,
                    "name": r["name"],
                    "of_base": lv["rps"] / base if base else None,
                    "of_peer": lv["p99_ms"] / theirs if lv.get("p99_ms") and theirs else None,
                }
            )
    return rows


COLUMNS = [
    Column("server", "name", left=True),
    Column("c", "concurrency"),
    Column("answered req/s", "rps", ".1f"),
    Column("error answers / requests", lambda lv: f"{int(lv['errors'])} / {int(lv['requests'])}"),
    Column("p99 ms", "p99_ms"),
    Column("req/s / its c=16", "of_base", ".0%"),
    Column("p99 / peer's", "of_peer", times),
]


def markdown(doc: dict) -> list[str]:
    duration = doc["duration_s"]
    lines = [
        f"`python -m bench.overload --image {doc['image']} --duration {duration:g}`: closed loop, "
        f"{duration:g} s per level after 5 s of warm-up, full-size stand-in, SQuAD-like requests; "
        "ours with one worker (16 requests served at once, the rest waiting; `QA_MAX_WAITING_REQUESTS` "
        "from the budget), the peer as in the main table. `fp32-5s-budget` admits only what 5 s "
        "answer, so c=256 is past it: its error answers are 503s (nginx's refusals, and the worker's for "
        "requests whose budget ran out while they waited) and 504s (requests that ran out of it while "
        "computed). The clients wait out a 503's Retry-After (at most 1 s) before their next request.",
        "",
        *table(_rows([r for r in doc["results"] if not r.get("error")]), COLUMNS),
    ]
    return lines + [f"- **{r['name']} failed**: {r['error']}" for r in doc["results"] if r.get("error")]


def _run_args(args) -> list[str]:
    """bench.run's arguments: the configurations at the overload levels, its output under build/overload/."""
    argv = ["--target", f"image:{args.image}", "--concurrency", LEVELS, "--duration", str(args.duration)]
    argv += ["--answers", "0", "--ceiling-s", "0", "--no-kernel", "--reference", "fp32"]
    argv += [
        "--report",
        str(OUT / "BENCHMARKS.md"),
        "--results-dir",
        str(OUT / "results"),
        "--chart-dir",
        str(OUT),
    ]
    for name, env in CONFIGS.items():
        argv += ["--config", f"{name}={env}"]
    if not args.peer:
        argv.append("--no-peer")
    if args.peer_venv:
        argv += ["--peer-venv", args.peer_venv]
    return argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--no-peer", dest="peer", action="store_false")
    parser.add_argument("--peer-venv", default=None, help="the peer's venv (bench.run's default when unset)")
    args = parser.parse_args()
    status = bench_run.main(_run_args(args))
    doc = json.loads(max((OUT / "results").glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())
    results = [
        {
            **{k: r[k] for k in ("name", "kind", "error")},
            "levels": [{k: lv.get(k) for k in LEVEL_KEYS} for lv in r["levels"]],
        }
        for r in doc["results"]
    ]
    data = {"image": args.image, "duration_s": args.duration, "results": results}
    print("\n".join(markdown(data)))
    render.publish_side_run("overload", data)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
