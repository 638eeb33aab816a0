"""Overload: closed-loop load far past one worker's threads, ours against the peer, in one run.

    python -m bench.overload --image distilbert-qa:latest [--duration 20]

Runs `bench.run` into build/overload/ (its own report there): the peer, then ours with one worker
at fp32 and int8, and fp32 with a 5 s budget (`SAGEMAKER_MODEL_SERVER_TIMEOUT=5`), whose queue
admits only what 5 s answer, so that c=256 is past the budget; each at c=16, 64 and 256. Then
writes bench/results/<class>.overload.md, shown in BENCHMARKS.md under this CPU class: per
configuration and level the answered requests per second, the error answers, the p99 latency, the
throughput against the configuration's own c=16 and the p99 against the peer's at the same level.
Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json

from bench import report
from bench import run as bench_run

OUT = report.REPO / "build" / "overload"
CONFIGS = {
    "fp32": "SAGEMAKER_MODEL_SERVER_WORKERS=1",
    "int8": "QA_PRECISION=int8,SAGEMAKER_MODEL_SERVER_WORKERS=1",
    "fp32-5s-budget": "SAGEMAKER_MODEL_SERVER_WORKERS=1,SAGEMAKER_MODEL_SERVER_TIMEOUT=5",
}
LEVELS = "16,64,256"


def table(results: list[dict]) -> list[str]:
    peer = next((r for r in results if r["kind"] == "peer"), None)
    peer_p99 = {lv["concurrency"]: lv.get("p99_ms") for lv in (peer or {}).get("levels", [])}
    lines = [
        "| server | c | answered req/s | error answers / requests | p99 ms | req/s / its c=16 | p99 / peer's |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['name']} | — | failed: {r['error']} | | | | |")
            continue
        base = r["levels"][0]["rps"] if r["levels"] else 0.0
        for lv in r["levels"]:
            c, p99 = lv["concurrency"], lv.get("p99_ms")
            of_base = f"{lv['rps'] / base:.0%}" if base else "—"
            theirs = peer_p99.get(c) if r is not peer else None
            of_peer = f"{p99 / theirs:.2f}x" if p99 and theirs else "—"
            lines.append(
                f"| {r['name']} | {c} | {lv['rps']:.1f} | {int(lv['errors'])} / {int(lv['requests'])} | "
                f"{p99 if p99 is not None else '—'} | {of_base} | {of_peer} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--no-peer", dest="peer", action="store_false")
    parser.add_argument("--peer-venv", default=None, help="the peer's venv (bench.run's default when unset)")
    args = parser.parse_args()
    argv = [
        "--target",
        f"image:{args.image}",
        "--concurrency",
        LEVELS,
        "--duration",
        str(args.duration),
        "--answers",
        "0",
        "--ceiling-s",
        "0",
        "--reference",
        "fp32",
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
    status = bench_run.main(argv)
    doc = json.loads(max((OUT / "results").glob("*.json"), key=lambda p: p.stat().st_mtime).read_text())
    lines = [
        f"`python -m bench.overload --image {args.image} --duration {args.duration:g}`: closed loop, "
        f"{args.duration:g} s per level after 5 s of warm-up, full-size stand-in, SQuAD-like requests; "
        "ours with one worker (16 requests served at once, the rest waiting; `QA_MAX_WAITING_REQUESTS` "
        "from the budget), the peer as in the main table. `fp32-5s-budget` admits only what 5 s "
        "answer, so c=256 is past it: its error answers are 503s (nginx's refusals, and the worker's for "
        "requests whose budget ran out while they waited) and 504s (requests that ran out of it while "
        "computed). The clients wait out a 503's Retry-After (at most 1 s) before their next request.",
        "",
        *table(doc["results"]),
    ]
    print("\n".join(lines))
    report.write_side_report("overload", "Overload: far past one worker's threads", lines)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
