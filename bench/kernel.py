"""The kernel's own CPU per request: the forward passes of the windows a benchmark level
answered, run in a process of their own, without the server around them.

Loads the model as a server worker does (`load_model` with the options the configuration's env
gives the server: `Settings.from_env`, so the same execution plan, threads, lanes and batching
rules), cuts the requests into windows (not timed), then sends each request's windows through the
model's batcher, with as many requests in flight as one worker had (the level's concurrency over
the workers), and reads the process's CPU time (`time.process_time`: every thread, the runtimes'
included) over those passes. bench.run compares it with the server's CPU per request: the
serving overhead. Run as a child process, so the bench process never loads a runtime:

    echo '{"model": DIR, "env": {...}, "requests": 400, "levels": [{"concurrency": 4, "answered": [...]}]}' \\
        | python -m bench.kernel
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

WARMUP_REQUESTS = 20


def request_windows(model, requests) -> list[list]:
    """Each request's windows, as the server cuts them (a request's windows in one list)."""
    from qa.request import request_from_object

    out = []
    for r in requests:
        request = request_from_object(r.body(), max_items=model.options.max_items_per_request)
        items = model.windows.windows_for(request, model.options.max_windows_per_request)
        out.append([w for item in items for w in item])
    return out


def passes_cpu_s(model, per_request: list[list], in_flight: int) -> float:
    """Process CPU seconds to run every request's windows through the batcher, `in_flight` at a time."""
    pending = iter(per_request)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                windows = next(pending, None)
            if windows is None:
                return
            model.batcher.submit(windows)

    clients = [threading.Thread(target=client, name=f"kernel-client-{i}") for i in range(in_flight)]
    began = time.process_time()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    return time.process_time() - began


def measure(model_dir: Path, env: dict[str, str], request_count: int, levels: list[dict]) -> list[dict]:
    """Per level: the kernel's CPU seconds per answered request, and how it was run."""
    from qa.corpus import make_requests
    from qa.loading import load_model
    from serving.settings import Settings

    settings = Settings.from_env(env)
    model = load_model(Path(model_dir), settings.qa)
    requests = make_requests(request_count)
    passes_cpu_s(model, request_windows(model, requests[:WARMUP_REQUESTS]), 1)
    out = []
    for level in levels:
        answered = [requests[i] for i in level["answered"]]
        in_flight = max(
            1, min(settings.requests_per_worker, math.ceil(level["concurrency"] / settings.workers))
        )
        per_request = request_windows(model, answered)
        cpu_s = passes_cpu_s(model, per_request, in_flight)
        out.append(
            {
                "concurrency": level["concurrency"],
                "kernel_cpu_s_per_req": round(cpu_s / len(answered), 4) if answered else None,
                "kernel_in_flight": in_flight,
                "kernel_windows": sum(map(len, per_request)),
            }
        )
    return out


def run_child(
    python: str, model_dir: Path, env: dict[str, str], request_count: int, levels: list[dict]
) -> list[dict]:
    """measure() in a child process; raises RuntimeError with its last line on failure."""
    spec = {"model": str(model_dir), "env": env, "requests": request_count, "levels": levels}
    out = subprocess.run(
        [python, "-m", "bench.kernel"],
        input=json.dumps(spec),
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {out.returncode}: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(measure(Path(spec["model"]), spec["env"], spec["requests"], spec["levels"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
