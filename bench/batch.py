"""Batch Transform against real time, same image, model and precision, one after the other:

    python -m bench.batch --image distilbert-qa:latest [--model DIR] [--precision fp32 int8]

For each precision: the real-time container's best closed-loop throughput (concurrency 4 and 16,
SQuAD-like requests of ~1 KB), then a Batch Transform container (SAGEMAKER_BATCH=true): the
mini-batch size it advertises on /execution-parameters, one such mini-batch of the same records
as JSON Lines (what SageMaker sends with the defaults), timed, and its records per second. Prints
one JSON line per precision, then the table; the figures go to bench/results/<class>.batch.json and so to
BENCHMARKS.md under this CPU class. Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import loadgen, render, servers
from bench.loopback import free_port, wait_until_ready
from bench.make_standin_model import DEFAULT_OUT as DEFAULT_MODEL
from bench.tables import Column, table
from qa import corpus

READY_TIMEOUT_S = 600


def start(name: str, image: str, model: Path, work: Path, env: dict[str, str]) -> servers.ImageServer:
    server = servers.ImageServer(name, model, work, image, env)
    server.start(free_port())
    probe = corpus.make_requests(1)[0]
    wait_until_ready(lambda: loadgen.first_answer(server.port, probe), READY_TIMEOUT_S, server.alive, 0.5)
    return server


def real_time_best(server: servers.ImageServer, requests: list, duration: float) -> float:
    best = 0.0
    for concurrency in (4, 16):
        level = loadgen.run_level(server.port, requests, concurrency, duration, warmup=5.0)
        assert level.errors == 0, level.error_examples
        best = max(best, level.rps)
    return best


def mini_batch(requests: list, megabytes: int) -> tuple[bytes, int]:
    lines, size = [], 0
    for index in range(10**9):
        r = requests[index % len(requests)]
        line = json.dumps({"question": r.question, "context": r.context})
        if size + len(line) + 1 > megabytes * 1024 * 1024:
            return ("\n".join(lines) + "\n").encode(), len(lines)
        lines.append(line)
        size += len(line) + 1
    raise AssertionError("unreachable")


def batch_job(server: servers.ImageServer, requests: list) -> dict:
    base = f"http://127.0.0.1:{server.port}"
    with urllib.request.urlopen(f"{base}/execution-parameters", timeout=10) as resp:
        params = json.load(resp)
    body, records = mini_batch(requests, params["MaxPayloadInMB"])
    post = urllib.request.Request(
        f"{base}/invocations", data=body, headers={"Content-Type": "application/jsonlines"}
    )
    began = time.perf_counter()
    with urllib.request.urlopen(post, timeout=3600) as resp:
        lines = resp.read().decode().splitlines()
    seconds = time.perf_counter() - began
    assert len(lines) == records and not any('"error"' in line[:10] for line in lines)
    return {"payload_mb": params["MaxPayloadInMB"], "records": records, "seconds": round(seconds, 1)}


TITLE = "Batch Transform against real time"
COLUMNS = [
    Column("precision", "precision", left=True),
    Column("real-time best req/s", "real_time_best_rps"),
    Column("advertised mini-batch", "payload_mb", lambda mb: f"{mb} MB"),
    Column("records", "records"),
    Column("seconds", "seconds"),
    Column("records/s", "batch_records_per_s"),
    Column("batch / real time", "batch_vs_real_time", ".0%"),
]


def markdown(doc: dict) -> list[str]:
    return [
        f"`python -m bench.batch --image {doc['image']} --precision {' '.join(doc['precisions'])}`, model "
        f"`{doc['model']}`: the real-time container's best of c=4 and c=16 ({doc['duration_s']:g} s each), then one "
        "default mini-batch (the size `/execution-parameters` advertises) of the same ~1 KB records as "
        "JSON Lines to a Batch Transform container (`SAGEMAKER_BATCH=true`, budget 600 s).",
        "",
        *table(doc["rows"], COLUMNS),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per real-time level")
    args = parser.parse_args()
    requests = corpus.make_requests(400)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qa-bench-batch-") as work:
        for precision in args.precision:
            env = {"QA_PRECISION": precision}
            server = start(f"rt-{precision}", args.image, args.model, Path(work), env)
            try:
                best = real_time_best(server, requests, args.duration)
            finally:
                server.stop()
            server = start(
                f"batch-{precision}", args.image, args.model, Path(work), {**env, "SAGEMAKER_BATCH": "true"}
            )
            try:
                job = batch_job(server, requests)
            finally:
                server.stop()
            row = {"precision": precision, "real_time_best_rps": round(best, 2), **job}
            row["batch_records_per_s"] = round(job["records"] / job["seconds"], 2)
            row["batch_vs_real_time"] = round(row["batch_records_per_s"] / best, 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    data = {
        "image": args.image,
        "precisions": args.precision,
        "model": str(args.model),
        "duration_s": args.duration,
        "rows": rows,
    }
    print("\n".join(markdown(data)))
    render.publish_side_run("batch", data)


if __name__ == "__main__":
    main()
