"""Benchmark: the peer and our configurations on one model, closed-loop load, answers compared.

Files the run under this machine's instruction-set class (from /proc/cpuinfo's flags): writes
bench/results/<class>.json (the figures, document.py), then the chart
bench/benchmarks-<class>.png (skipped, loudly, without matplotlib), then BENCHMARKS.md from every
class file present (render.py). Before the servers, it measures the CPU's fp32 ceiling
(single-thread torch.mm) for the FLOP columns; after each of ours, the kernel alone on the windows
each level answered (kernel.py), for the serving overhead column.

    pip install -r requirements-dev.txt
    python -m bench.run --target image:distilbert-qa:latest --build --rounds 2 --config default= \\
        --config int8=QA_PRECISION=int8 --config bf16=QA_PRECISION=bf16
    python -m bench.run --smoke            # a few seconds per level, tiny model, output in build/

Servers run one at a time, in the order peer, ours..., repeated `--rounds` times, so machine
noise hits all of them alike; every server is stopped (or its container removed) before the
next starts, also on failure or Ctrl-C. Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import document, flops, kernel, loadgen, render, servers
from bench.loopback import NotReady, ServerDied, free_port, wait_until_ready
from bench.make_standin_model import DEFAULT_OUT as DEFAULT_MODEL
from bench.make_standin_model import build as build_model
from bench.make_standin_model import find_vocab
from qa import corpus

REPO = servers.REPO
POLL_S = 0.25
PORTS = (20000, 32000)  # below 32767 for every server: MMS rejects higher ones ("Invalid port number")


def parse_config(text: str) -> tuple[str, dict[str, str]]:
    """`name=KEY=V,KEY2=V2` (or `name=`) -> (name, env)."""
    name, sep, rest = text.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"--config {text!r}: use NAME= or NAME=KEY=VALUE,KEY=VALUE")
    env = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"--config {text!r}: {item!r} is not KEY=VALUE")
        env[key.strip()] = value.strip()
    return name, env


def wait_first_answer(server: servers.Server, probe: corpus.CorpusQuestion, timeout: float) -> float:
    """Seconds from launch to the first correct answer; raises if the server dies or times out."""
    left = timeout - (time.perf_counter() - server.t_launch)
    try:
        wait_until_ready(lambda: loadgen.first_answer(server.port, probe), left, server.alive, POLL_S)
    except ServerDied:
        raise RuntimeError(f"{server.name} exited before answering") from None
    except NotReady:
        raise RuntimeError(f"{server.name} gave no answer within {timeout:.0f} s") from None
    return time.perf_counter() - server.t_launch


def measure_level(server, meter, requests, concurrency: int, args, flop_info) -> tuple[dict, list[int]]:
    """One concurrency level against a running server: its figures, and the requests it answered."""
    meter.reset_level()
    level = loadgen.run_level(
        server.port,
        requests,
        concurrency,
        args.duration,
        args.warmup,
        args.max_requests,
        on_measure_start=meter.mark_cpu,
        on_measure_end=meter.mark_cpu_end,
    )
    cpu_used = meter.cpu_at_end - meter.cpu_at_mark
    meter.sample()
    row = level.summary()
    answered = level.requests - level.errors
    row["cpu_s_per_req"] = round(cpu_used / answered, 4) if answered else None
    row.update(flops.level_flops(flop_info, level.answered))
    row["peak_memory_bytes"] = meter.level_peak
    print(
        f"  {server.name} c={concurrency}: {row['rps']} req/s, p50 {row['p50_ms']} ms, "
        f"p99 {row['p99_ms']} ms, errors {row['errors']}/{row['requests']}, "
        f"CPU {row['cpu_s_per_req']} s/req, mem {meter.level_peak / 2**20:.0f} MiB",
        flush=True,
    )
    if level.error_examples:
        print(f"    errors, e.g.: {level.error_examples[0]}", flush=True)
    return row, level.answered


def measure(
    server: servers.Server, requests: list[corpus.CorpusQuestion], args, flop_info: dict | None = None
) -> dict:
    """Start one server, measure it, stop it (never leaves it running); then, for ours, the
    kernel alone on the same windows."""
    result = {"name": server.name, "kind": server.kind, "env": server.extra_env, "levels": [], "error": None}
    answered: list[list[int]] = []
    try:
        result["describe"] = server.describe()
        server.start(free_port(between=PORTS))
        with servers.Meter(server) as meter:
            result["startup_s"] = round(wait_first_answer(server, requests[0], args.startup_timeout), 2)
            print(f"  {server.name}: first answer after {result['startup_s']} s", flush=True)
            for concurrency in args.concurrency:
                row, level_answered = measure_level(server, meter, requests, concurrency, args, flop_info)
                result["levels"].append(row)
                answered.append(level_answered)
                if not server.alive():
                    raise RuntimeError(f"{server.name} exited during the concurrency {concurrency} level")
            if args.answers:
                answers = loadgen.collect_answers(server.port, requests[: args.answers])
                result["answers"] = {str(k): v for k, v in sorted(answers.items())}
            result["peak_memory_bytes"] = meter.peak
    except Exception as exc:  # one failed server must not stop the others being measured
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {server.name} FAILED: {result['error']}\n--- log tail ---\n{server.log_tail()}", flush=True)
    finally:
        server.stop()
    if args.kernel and server.kind != "peer" and not result["error"]:
        add_kernel_figures(result, answered, args)
    return result


def add_kernel_figures(result: dict, answered: list[list[int]], args) -> None:
    """Per level, the kernel's CPU per request on the requests the level answered (bench/kernel.py),
    measured with the server stopped; on failure, the reason, said loudly (the run goes on)."""
    levels = [{"concurrency": lv["concurrency"], "answered": a} for lv, a in zip(result["levels"], answered)]
    print(f"  {result['name']}: the kernel alone on the same windows", flush=True)
    try:
        figures = kernel.run_child(args.python, args.model, result["env"], args.requests, levels)
    except Exception as exc:  # the overhead column is optional; the run is not
        result["kernel_error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {result['name']}: KERNEL NOT MEASURED: {result['kernel_error']}", flush=True)
        return
    for row, figure in zip(result["levels"], figures):
        row.update({k: v for k, v in figure.items() if k != "concurrency"})
        print(
            f"  {result['name']} c={row['concurrency']}: kernel {row['kernel_cpu_s_per_req']} CPU s/req"
            f" ({row['kernel_in_flight']} in flight), server {row['cpu_s_per_req']}",
            flush=True,
        )


def median_of_rounds(runs: list[dict]) -> dict:
    """One result per server: the median of each figure across rounds (first round's answers)."""
    ok = [r for r in runs if not r["error"]] or runs[:1]
    merged = dict(ok[0])
    if len(ok) > 1:
        for key in ("startup_s", "peak_memory_bytes"):
            merged[key] = round(statistics.median(r[key] for r in ok), 4)
        merged["levels"] = []
        for i, level in enumerate(ok[0]["levels"]):
            row = dict(level)
            for key, value in level.items():
                values = [r["levels"][i][key] for r in ok if i < len(r["levels"])]
                if isinstance(value, (int, float)) and key != "concurrency" and None not in values:
                    row[key] = round(statistics.median(values), 4)
            merged["levels"].append(row)
    merged["rounds"] = len(ok)
    return merged


def compare_answers(results: list[dict], reference_name: str) -> None:
    """Share of top answers equal to the fp32 default's (and to the peer's) on the same requests."""
    by_name = {r["name"]: r.get("answers") for r in results}
    reference, peer = by_name.get(reference_name), by_name.get("peer")
    for r in results:
        answers = r.get("answers")
        if not answers or r["kind"] == "peer":
            continue
        if reference:
            r["match_default"], r["match_count"] = loadgen.match_share(answers, reference)
        if peer:
            r["match_peer"], r["match_peer_count"] = loadgen.match_share(answers, peer)


def fp32_ceiling(seconds: float) -> dict:
    """The CPU's fp32 ceiling (GFLOP/s per CPU), measured now; on failure, the reason, said loudly."""
    if seconds <= 0:
        return {"gflops_per_cpu": None, "error": "skipped (--ceiling-s 0)"}
    print(f"bench: fp32 ceiling: single-thread torch.mm for {seconds:g} s", flush=True)
    try:
        ceiling = flops.measure_ceiling(seconds)
    except Exception as exc:  # the FLOP columns are optional; the run is not
        print(f"bench: FP32 CEILING NOT MEASURED: {type(exc).__name__}: {exc}", flush=True)
        return {"gflops_per_cpu": None, "error": f"{type(exc).__name__}: {exc}"}
    print(f"bench: fp32 ceiling {ceiling['gflops_per_cpu']} GFLOP/s per CPU ({ceiling['what']})", flush=True)
    return ceiling


def request_flops(model: Path, requests: list[corpus.CorpusQuestion]) -> dict:
    """Tokens and GFLOP per request for this model; on failure, the reason, said loudly."""
    try:
        info = flops.request_flops(model, requests)
    except Exception as exc:  # e.g. no tokenizer.json in a model dir
        print(f"bench: FLOP PER REQUEST NOT COMPUTED: {type(exc).__name__}: {exc}", flush=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
    low, mean, high = info["tokens"]
    print(
        f"bench: {low}-{high} tokens per request (mean {mean}), {info['gflop_per_req_corpus']:.2f} GFLOP"
        " per request over the corpus",
        flush=True,
    )
    return info


def make_servers(args, work_dir: Path) -> list[servers.Server]:
    out: list[servers.Server] = []
    if args.peer:
        out.append(
            servers.PeerServer(
                "peer",
                args.model,
                work_dir,
                servers.ensure_peer_venv(args.peer_venv, shlex.split(args.peer_pip_args)),
            )
        )
    for name, env in args.config:
        if args.target == "host":
            out.append(servers.HostServer(name, args.model, work_dir, args.python, env))
        else:
            out.append(
                servers.ImageServer(name, args.model, work_dir, args.target.removeprefix("image:"), env)
            )
    return out


def _add_server_args(p: argparse.ArgumentParser) -> None:
    """What is measured: ours (target, configurations, model) and the peer."""
    p.add_argument(
        "--target", default="host", help="image:TAG (the built image under Docker) or host (default)"
    )
    p.add_argument(
        "--config",
        action="append",
        type=parse_config,
        default=None,
        metavar="NAME=K=V,...",
        help="one configuration of ours and its extra env; repeatable (default: default=)",
    )
    p.add_argument("--reference", default="default", help="config whose answers the others are compared to")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="measure ours only")
    p.add_argument(
        "--peer-venv",
        type=Path,
        default=REPO / "build" / "peer-venv",
        help="the peer's venv, created with its pins when missing",
    )
    p.add_argument("--peer-pip-args", default="", help="extra pip arguments when creating the peer venv")
    p.add_argument(
        "--model", type=Path, default=None, help="model dir (default: the stand-in, built when missing)"
    )
    p.add_argument("--python", default=sys.executable, help="interpreter for --target host and the kernel")
    p.add_argument(
        "--build",
        action="store_true",
        help="first build the --target image: ./build.sh --tag TAG --no-model [--build-args]",
    )
    p.add_argument("--build-args", default="", help="extra ./build.sh arguments, one string")


def _add_load_args(p: argparse.ArgumentParser) -> None:
    """How it is measured: levels, durations, rounds, the ceiling and the kernel."""
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each level")
    p.add_argument("--max-requests", type=int, default=None, help="cap on measured requests per level")
    p.add_argument("--answers", type=int, default=200, help="requests in the compare step (0: skip)")
    p.add_argument("--requests", type=int, default=400, help="distinct requests generated")
    p.add_argument(
        "--rounds", type=int, default=1, help="alternate peer/ours this many times; report medians"
    )
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument(
        "--ceiling-s",
        type=float,
        default=flops.CEILING_S,
        help="seconds of single-thread fp32 torch.mm for the CPU's ceiling, before the servers (0: skip)",
    )
    p.add_argument(
        "--no-kernel",
        dest="kernel",
        action="store_false",
        help="skip the kernel-alone measurement (and so the serving overhead column)",
    )


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--isa-class",
        default=None,
        help="file the run under this instruction-set class (default: from /proc/cpuinfo's flags, e.g. avx2)",
    )
    p.add_argument("--report", type=Path, default=render.REPORT, help="rendered from all class files")
    p.add_argument("--results-dir", type=Path, default=render.RESULTS_DIR, help="one <class>.json per class")
    p.add_argument("--chart-dir", type=Path, default=render.CHART_DIR, help="benchmarks-<class>.png")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="harness check: tiny model, c=1,4, 3 s levels, output under build/bench-smoke/",
    )


def _apply_smoke(args: argparse.Namespace) -> None:
    """--smoke: the tiny model, short levels, output under build/bench-smoke/."""
    out = REPO / "build" / "bench-smoke"
    args.model = args.model or REPO / "build" / "standin-tiny"
    if args.concurrency == [1, 4, 16]:
        args.concurrency = [1, 4]
    args.duration, args.warmup = min(args.duration, 3.0), min(args.warmup, 1.0)
    args.answers, args.ceiling_s = min(args.answers, 8), min(args.ceiling_s, 0.5)
    args.report, args.results_dir, args.chart_dir = out / "BENCHMARKS.md", out / "results", out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    _add_server_args(p)
    _add_load_args(p)
    _add_output_args(p)
    args = p.parse_args(argv)
    args.config = args.config or [("default", {})]
    if args.smoke:
        _apply_smoke(args)
    args.model = args.model or DEFAULT_MODEL
    if args.target != "host" and not args.target.startswith("image:"):
        p.error("--target must be host or image:TAG")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the running server is still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not (args.model / "config.json").exists():
        print(f"bench: building the stand-in model in {args.model}", flush=True)
        build_model(args.model, find_vocab(), tiny=args.smoke)
    if args.build and args.target.startswith("image:"):
        tag = args.target.removeprefix("image:")
        subprocess.run(
            ["bash", str(REPO / "build.sh"), "--tag", tag, "--no-model", *shlex.split(args.build_args)],
            cwd=REPO,
            check=True,
        )
    requests = corpus.make_requests(args.requests)
    cls = args.isa_class or document.machine()["isa_class"]
    ceiling = fp32_ceiling(args.ceiling_s)
    flop_info = request_flops(args.model, requests)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        for round_no in range(args.rounds):
            for server in make_servers(args, Path(tmp)):
                print(f"bench: round {round_no + 1}/{args.rounds}: {server.name} ({server.kind})", flush=True)
                runs.setdefault(server.name, []).append(measure(server, requests, args, flop_info))
                time.sleep(2)  # let the machine settle between servers
    results = [median_of_rounds(r) for r in runs.values()]
    compare_answers(results, args.reference)
    doc = document.build(results, args, requests, ceiling, flop_info, cls)
    render.write_run(doc, args.results_dir, args.report, args.chart_dir)
    print("\n".join(render.section(doc, None)), flush=True)
    return 0 if all(not r["error"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
