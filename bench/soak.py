"""Soak: minutes of mixed valid and invalid traffic against one server, then the verdict.

    python -m bench.soak --image distilbert-qa:test --model build/standin-packaged \\
        --minutes 10 --concurrency 16 --json build/soak-standin.json
    python -m bench.soak --host --model tests/fixtures/models/distilbert-tiny-s0 --minutes 1

Starts the image (bench/servers.py's ImageServer: host network, 127.0.0.1, model mounted
read-only) or, with --host, the host stack (HostServer), and waits for /ping. Then:

1. canary: every request of a fixed valid set, once, one at a time; its answer is the reference;
2. for --minutes, `--concurrency` closed-loop clients (keep-alive connections) send a seeded mix:
   ~80% requests of the valid set (single items, lists, parameters, jsonlines, CSV) and ~20%
   invalid ones (malformed JSON, NaN, wrong types, bad parameters, unknown keys, wrong or unknown
   content type, an unacceptable Accept, more items than QA_MAX_ITEMS_PER_REQUEST, ...), each
   with its documented status (docs/contract.md). The first --warmup-s seconds are the warm-up;
3. every 5 s: the gunicorn worker pids (`docker top`, or /proc for --host) and memory.

Goals (exit code 1 when one is missed, 2 when the server could not be started):
- unexpected statuses 0: a valid request is 200, an invalid one its documented 4xx with the
  `{"code", "type", "message"}` body (a connection error counts as unexpected too);
- changed answers 0: a valid request's answer equals its canary (answer text, start and end exactly,
  score within 1e-4; the largest score drift is reported);
- worker restarts 0: no worker pid beyond the first ones, no extra "Booting worker" log line;
- memory growth after the warm-up < 10%: for the image the container's usage as `docker stats`
  shows it (cgroup usage minus inactive file cache), for --host the summed PSS of its processes;
  the cgroup's anonymous (RSS) memory and the summed PSS are reported too. Start is right after
  /ping is 200, warm at the end of the warm-up, end after the last request;
- the server still running at the end.

Prints the summary and, with --json FILE, writes it with the timeline. Loopback only; the server
is always stopped (its container removed), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import json
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import loadgen, servers
from bench.loopback import HOST, NotReady, ServerDied, free_port, wait_until_ready
from qa import corpus

PORTS = (20000, 32000)
REQUEST_TIMEOUT_S = 90.0
SAMPLE_EVERY_S = 5.0
SCORE_TOLERANCE = 1e-4
MEMORY_GROWTH_GOAL = 0.10
INVALID_SHARE = 0.2
SEED = 7


# --- the traffic ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Probe:
    """One request of the mix: what is sent and what must come back."""

    name: str
    body: bytes
    content_type: str | None = "application/json"
    expected: int = 200
    accept: str | None = None
    method: str = "POST"

    @property
    def valid(self) -> bool:
        return self.expected == 200


def _json(doc) -> bytes:
    return json.dumps(doc).encode()


def valid_probes(count: int = 24) -> list[Probe]:
    """A fixed set of valid requests in every shape the contract accepts (docs/contract.md, Requests)."""
    reqs = corpus.make_requests(count + 8)
    item = [{"question": r.question, "context": r.context} for r in reqs]
    probes = [Probe(f"single-{i}", _json({"inputs": item[i]})) for i in range(count)]
    probes += [
        Probe("top_k-3", _json({"inputs": item[count], "parameters": {"top_k": 3}})),
        Probe("list-2", _json({"inputs": item[count + 1 : count + 3], "parameters": {}})),
        Probe("bare", _json({**item[count + 3], "parameters": {"max_answer_len": 30}})),
        Probe("top-level-list", _json(item[count + 4 : count + 6])),
        Probe(
            "impossible",
            _json({"inputs": item[count + 6], "parameters": {"handle_impossible_answer": True}}),
        ),
        Probe(
            "short-windows",
            _json({"inputs": item[count + 7], "parameters": {"max_seq_len": 128, "doc_stride": 32}}),
        ),
        Probe(
            "jsonlines-2",
            b"\n".join(_json(item[i]) for i in (0, 1)) + b"\n",
            "application/jsonlines",
        ),
        Probe(
            "csv-2",
            (
                "question,context\n"
                + "".join(
                    f'"{x["question"].replace(chr(34), 2 * chr(34))}","{x["context"].replace(chr(34), 2 * chr(34))}"\n'
                    for x in item[2:4]
                )
            ).encode(),
            "text/csv",
        ),
    ]
    return probes


def invalid_probes() -> list[Probe]:
    """Invalid requests, each with its documented status (docs/contract.md, Requests and Errors)."""
    ok = {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843."}
    too_many = [ok] * 65  # QA_MAX_ITEMS_PER_REQUEST is 64
    return [
        Probe("malformed-json", b'{"inputs": {"question": "Who?", "context": ', expected=400),
        Probe(
            "nan",
            b'{"inputs": {"question": "Who?", "context": "Ada."}, "parameters": {"top_k": NaN}}',
            expected=400,
        ),
        Probe("empty-body", b"", expected=400),
        Probe("empty-list", b"[]", expected=400),
        Probe("question-int", _json({"inputs": {"question": 5, "context": "Ada."}}), expected=400),
        Probe("context-list", _json({"inputs": {"question": "Who?", "context": ["Ada."]}}), expected=400),
        Probe("blank-question", _json({"inputs": {"question": "   ", "context": "Ada."}}), expected=400),
        Probe("missing-context", _json({"inputs": {"question": "Who?"}}), expected=400),
        Probe("unknown-key", _json({"inputs": ok, "extra": 1}), expected=400),
        Probe("unknown-parameter", _json({"inputs": ok, "parameters": {"temperature": 1}}), expected=400),
        Probe("top_k-0", _json({"inputs": ok, "parameters": {"top_k": 0}}), expected=400),
        Probe("top_k-true", _json({"inputs": ok, "parameters": {"top_k": True}}), expected=400),
        Probe("top_k-2.5", _json({"inputs": ok, "parameters": {"top_k": 2.5}}), expected=400),
        Probe("max_seq_len-4", _json({"inputs": ok, "parameters": {"max_seq_len": 4}}), expected=400),
        Probe("doc_stride-too-big", _json({"inputs": ok, "parameters": {"doc_stride": 1000}}), expected=400),
        Probe("parameters-list", _json({"inputs": ok, "parameters": [1]}), expected=400),
        Probe("bad-utf8", b'{"inputs": {"question": "\xff\xfe", "context": "Ada."}}', expected=400),
        Probe("csv-bad-header", b"query,text\nWho?,Ada.\n", "text/csv", expected=400),
        Probe("jsonlines-bad-line", _json(ok) + b"\n{not json\n", "application/jsonlines", expected=400),
        Probe("text-plain", _json({"inputs": ok}), "text/plain", expected=415),
        Probe("unknown-charset", _json({"inputs": ok}), "application/json; charset=klingon", expected=415),
        Probe("accept-html", _json({"inputs": ok}), accept="text/html", expected=406),
        Probe("too-many-items", _json({"inputs": too_many}), expected=413),
        Probe(
            "too-many-csv-rows",
            ("question,context\n" + "Who?,Ada.\n" * 65).encode(),
            "text/csv",
            expected=413,
        ),
        Probe("get-invocations", b"", None, expected=405, method="GET"),
    ]


def send(client: loadgen.Client, probe: Probe) -> tuple[int | None, dict[str, str], bytes, str | None]:
    """(status, headers, body, None), or (None, {}, b"", the connection error): recorded, not raised."""
    headers = {}
    if probe.content_type is not None:
        headers["Content-Type"] = probe.content_type
    if probe.accept is not None:
        headers["Accept"] = probe.accept
    try:
        status, got, data = client.request(probe.method, probe.body or None, headers)
    except (OSError, http.client.HTTPException) as exc:
        return None, {}, b"", f"{type(exc).__name__}: {exc}"
    return status, got, data, None


def parse_answer(headers: dict[str, str], data: bytes):
    if headers.get("content-type", "").startswith("application/jsonlines"):
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    return json.loads(data)


def answer_difference(got, want, drift: list[float]) -> str | None:
    """None when `got` equals the canary `want` (scores within SCORE_TOLERANCE); appends score drifts."""
    if isinstance(want, dict) and isinstance(got, dict) and "score" in want:
        if set(got) != set(want):
            return f"keys {sorted(got)} != {sorted(want)}"
        for key in want:
            if key == "score":
                continue
            if got[key] != want[key]:
                return f"{key} {got[key]!r} != {want[key]!r}"
        delta = abs(float(got["score"]) - float(want["score"]))
        drift.append(delta)
        if delta > SCORE_TOLERANCE:
            return f"score {got['score']} != {want['score']}"
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return f"{len(got)} entries != {len(want)}"
        for g, w in zip(got, want):
            problem = answer_difference(g, w, drift)
            if problem:
                return problem
        return None
    return None if got == want else f"{got!r} != {want!r}"


def error_problem(status: int | None, headers: dict[str, str], data: bytes, expected: int) -> str | None:
    if status != expected:
        return f"status {status}, expected {expected}"
    if expected == 405:  # the app's 405 carries the error body too, and the Allow header
        if "allow" not in headers:
            return "405 without Allow"
    try:
        body = json.loads(data)
    except ValueError:
        return "error body is not JSON"
    if not isinstance(body, dict) or set(body) != {"code", "type", "message"} or body["code"] != expected:
        return f"not the error shape: {data[:200]!r}"
    return None


# --- the server: workers and memory -----------------------------------------------------------

# The container's cgroup as seen from inside it (v2, else v1); `cat` adds next to nothing to it.
_CGROUP_MEMORY = (
    "cat /sys/fs/cgroup/memory.current /sys/fs/cgroup/memory.stat 2>/dev/null"
    " || cat /sys/fs/cgroup/memory/memory.usage_in_bytes /sys/fs/cgroup/memory/memory.stat"
)


def cgroup_memory(container: str) -> dict[str, int] | None:
    """usage (docker stats' figure: usage minus inactive file cache) and anon (RSS), in bytes."""
    lines = _run(["docker", "exec", container, "sh", "-c", _CGROUP_MEMORY]).split("\n")
    if not lines or not lines[0].strip().isdigit():
        return None
    current = int(lines[0])
    stat = dict(line.split() for line in lines[1:] if len(line.split()) == 2)
    if "anon" in stat:  # cgroup v2
        return {
            "usage_bytes": current - int(stat["inactive_file"]),
            "anon_bytes": int(stat["anon"]),
            "cgroup": 2,
        }
    return {
        "usage_bytes": current - int(stat["total_inactive_file"]),
        "anon_bytes": int(stat["total_rss"]),
        "cgroup": 1,
    }


def _run(cmd: list[str], timeout: float = 30) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return out.stdout


def worker_pids(server: servers.Server) -> set[int]:
    """The gunicorn master's children (host pids)."""
    procs: dict[int, tuple[int, str]] = {}  # pid -> (ppid, command line)
    if isinstance(server, servers.ImageServer):
        lines = _run(["docker", "top", server.container, "-eo", "pid,ppid,args"]).splitlines()[1:]
        for line in lines:
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[0].isdigit():
                procs[int(parts[0])] = (int(parts[1]), parts[2])
    else:
        for pid in server.pids():
            fields = servers.stat_fields(pid)
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if fields is not None:
                procs[pid] = (int(fields[1]), cmd)
    masters = {
        pid
        for pid, (ppid, cmd) in procs.items()
        if "gunicorn" in cmd and "gunicorn" not in procs.get(ppid, (0, ""))[1]
    }
    return {pid for pid, (ppid, _) in procs.items() if ppid in masters}


def memory(server: servers.Server, docker_stats: bool = False) -> dict:
    """usage_bytes (the goal's figure), plus anon_bytes (cgroup RSS; image only) and pss_bytes;
    with `docker_stats`, docker's own MemUsage string for comparison (it takes about 2 s)."""
    sample = {"pss_bytes": servers.memory_bytes(server.pids())}
    if isinstance(server, servers.ImageServer):
        sample.update(cgroup_memory(server.container) or {})
        if docker_stats:
            fmt = "{{.MemUsage}}"
            sample["docker_stats"] = _run(
                ["docker", "stats", "--no-stream", "--format", fmt, server.container]
            ).strip()
    else:
        sample["usage_bytes"] = sample["pss_bytes"]
    return sample


def server_log(server: servers.Server) -> str:
    if isinstance(server, servers.ImageServer):
        out = subprocess.run(
            ["docker", "logs", server.container], capture_output=True, text=True, check=False
        )
        return out.stdout + out.stderr
    try:
        return server.log_path.read_text(errors="replace")
    except (OSError, AttributeError):
        return ""


# --- the run --------------------------------------------------------------------------------


class Tally:
    """What the clients saw, shared by their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses: dict[str, collections.Counter] = {
            "valid": collections.Counter(),
            "invalid": collections.Counter(),
        }
        self.by_probe: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.unexpected = 0
        self.unexpected_examples: list[str] = []
        self.changed = 0
        self.changed_examples: list[str] = []
        self.drift: list[float] = []
        self.latencies: list[float] = []
        self.sent = 0

    def record(self, probe: Probe, status, problem: str | None, changed: str | None, seconds: float, drift):
        with self.lock:
            self.sent += 1
            key = str(status) if status is not None else "connection-error"
            self.statuses["valid" if probe.valid else "invalid"][key] += 1
            self.by_probe[probe.name][key] += 1
            self.drift.extend(drift)
            if probe.valid and status == 200:
                self.latencies.append(seconds)
            if problem:
                self.unexpected += 1
                if len(self.unexpected_examples) < 10:
                    self.unexpected_examples.append(f"{probe.name}: {problem}")
            if changed:
                self.changed += 1
                if len(self.changed_examples) < 10:
                    self.changed_examples.append(f"{probe.name}: {changed}")


def check(
    probe: Probe, canary: dict[str, object], status, headers, data, error
) -> tuple[str | None, str | None, list]:
    """(unexpected-status problem, changed-answer problem, score drifts) for one answer."""
    drift: list[float] = []
    if error is not None:
        return error, None, drift
    if not probe.valid:
        return error_problem(status, headers, data, probe.expected), None, drift
    if status != 200:
        return f"status {status}: {data[:200]!r}", None, drift
    try:
        got = parse_answer(headers, data)
    except ValueError:
        return f"200 but not JSON: {data[:200]!r}", None, drift
    return None, answer_difference(got, canary[probe.name], drift), drift


def record_canary(port: int, probes: list[Probe]) -> dict[str, object]:
    client = loadgen.Client(port, timeout_s=REQUEST_TIMEOUT_S)
    canary = {}
    try:
        for probe in probes:
            status, headers, data, error = send(client, probe)
            if status != 200:
                raise RuntimeError(f"canary {probe.name}: {error or status} {data[:300]!r}")
            canary[probe.name] = parse_answer(headers, data)
    finally:
        client.close()
    return canary


def traffic(
    port: int,
    valid: list[Probe],
    invalid: list[Probe],
    canary: dict[str, object],
    concurrency: int,
    seconds: float,
    tally: Tally,
) -> loadgen.ClosedLoop:
    """The seeded mix from `concurrency` closed-loop clients for `seconds`, started."""
    rngs = [random.Random(SEED * 1000 + index) for index in range(concurrency)]

    def step(client: loadgen.Client | None, index: int, n: int) -> float:
        assert client is not None
        rng = rngs[index]
        probe = rng.choice(invalid) if rng.random() < INVALID_SHARE else rng.choice(valid)
        started = time.monotonic()
        status, headers, data, error = send(client, probe)
        elapsed = time.monotonic() - started
        problem, changed, drift = check(probe, canary, status, headers, data, error)
        tally.record(probe, status, problem, changed, elapsed, drift)
        return 0.1 if error is not None else 0.0  # a dead server is not hammered in a hot loop

    load = loadgen.ClosedLoop(
        concurrency, step, port=port, name="soak", max_s=seconds, client_timeout_s=REQUEST_TIMEOUT_S
    )
    return load.start()


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


@dataclasses.dataclass
class Observed:
    """What one soak saw of the server, beside the clients' Tally."""

    tally: Tally
    seconds: float
    memory: dict[str, dict]  # start, warm, end
    workers_first: set[int]
    workers_seen: set[int]
    booted: int  # "Booting worker" log lines
    alive: bool
    timeline: list[dict]

    @property
    def restarts(self) -> int:
        return max(len(self.workers_seen) - len(self.workers_first), self.booted - len(self.workers_first))


def soak(args: argparse.Namespace) -> tuple[dict, int]:
    env = dict(args.env)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    if args.host:
        server: servers.Server = servers.HostServer("soak", args.model, work, sys.executable, env)
    else:
        server = servers.ImageServer("soak", args.model, work, args.image, env)
    valid, invalid = valid_probes(), invalid_probes()
    result: dict = {
        "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
        "server": "host stack" if args.host else f"image {args.image}",
        "model": str(args.model),
        "env": env,
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "warmup_s": args.warmup_s,
        "cpu": _cpu(),
        "valid_probes": len(valid),
        "invalid_probes": {p.name: p.expected for p in invalid},
    }
    try:
        observed = _soak_server(server, args, valid, invalid, result)
    finally:
        server.stop()
        if not args.host:  # the container's logs went with it; the scratch dir holds nothing
            shutil.rmtree(work, ignore_errors=True)
    if observed is None:
        return result, 2
    missed = _verdict(observed, result)
    if args.host:  # the host stack's log: kept when a goal was missed
        if missed:
            result["server_log"] = str(server.log_path)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result, 1 if missed else 0


def _soak_server(
    server: servers.Server, args: argparse.Namespace, valid: list[Probe], invalid: list[Probe], result: dict
) -> Observed | None:
    """Start the server, record the canary, run the mix while sampling; None (with result["error"])
    when the server could not be started or answer the canary."""
    port = free_port(between=PORTS)
    server.start(port)
    try:
        result["startup_s"] = round(
            wait_until_ready(lambda: _ping(port), args.startup_timeout, server.alive), 2
        )
    except (ServerDied, NotReady) as exc:
        result["error"] = f"the server did not become ready: {exc}\n{server.log_tail()}"
        return None
    mem_start = memory(server, docker_stats=True)
    workers_first = worker_pids(server)
    try:
        canary = record_canary(port, valid)
    except RuntimeError as exc:
        result["error"] = f"{exc}\n{server.log_tail()}"
        return None
    tally = Tally()
    began = time.monotonic()
    load = traffic(port, valid, invalid, canary, args.concurrency, args.minutes * 60, tally)
    timeline, mem_warm, seen = _watch(server, tally, args, began, result)
    load.stop(join_s=REQUEST_TIMEOUT_S + 10)
    seconds = time.monotonic() - began
    mem_end = memory(server, docker_stats=True)
    seen |= workers_first | worker_pids(server)
    return Observed(
        tally=tally,
        seconds=seconds,
        memory={"start": mem_start, "warm": mem_warm or dict(mem_end), "end": mem_end},
        workers_first=workers_first,
        workers_seen=seen,
        booted=len(re.findall(r"Booting worker with pid", server_log(server))),
        alive=server.alive(),
        timeline=timeline,
    )


def _watch(
    server: servers.Server, tally: Tally, args: argparse.Namespace, began: float, result: dict
) -> tuple[list[dict], dict | None, set[int]]:
    """Every SAMPLE_EVERY_S until the run's end (or the server's): (timeline, the memory at the end
    of the warm-up, the worker pids seen); progress printed every minute."""
    stop_at = began + args.minutes * 60
    timeline: list[dict] = []
    mem_warm = None
    seen: set[int] = set()
    next_progress = began + 60
    while time.monotonic() < stop_at:
        time.sleep(min(SAMPLE_EVERY_S, max(0.0, stop_at - time.monotonic())))
        now = time.monotonic() - began
        pids = worker_pids(server)
        seen |= pids
        sample = {"t_s": round(now, 1), "requests": tally.sent, "workers": sorted(pids), **memory(server)}
        timeline.append(sample)
        if mem_warm is None and now >= args.warmup_s:
            mem_warm = {**memory(server, docker_stats=True), "t_s": round(now, 1)}
        if not server.alive():
            result["error"] = "the server exited during the soak"
            break
        if time.monotonic() >= next_progress:
            next_progress += 60
            print(
                f"soak: {now / 60:.1f} min, {tally.sent} requests, {tally.unexpected} unexpected, "
                f"{tally.changed} changed, usage {_mib(sample.get('usage_bytes'))}",
                flush=True,
            )
    return timeline, mem_warm, seen


def _verdict(observed: Observed, result: dict) -> list[str]:
    """Write the figures into `result`; returns the goals missed."""
    tally, mem = observed.tally, observed.memory
    if mem["end"].get("usage_bytes") and mem["warm"].get("usage_bytes"):
        growth = (mem["end"]["usage_bytes"] - mem["warm"]["usage_bytes"]) / mem["warm"]["usage_bytes"]
    else:
        growth = math.inf  # not measured: the goal cannot be met
    result.update(
        {
            "seconds": round(observed.seconds, 1),
            "requests": tally.sent,
            "requests_per_s": round(tally.sent / observed.seconds, 2),
            "statuses": {kind: dict(sorted(c.items())) for kind, c in tally.statuses.items()},
            "statuses_by_probe": {name: dict(c) for name, c in sorted(tally.by_probe.items())},
            "unexpected": tally.unexpected,
            "unexpected_examples": tally.unexpected_examples,
            "changed_answers": tally.changed,
            "changed_examples": tally.changed_examples,
            "max_score_drift": max(tally.drift, default=0.0),
            "valid_latency_s": {
                "p50": _round(loadgen.percentile(tally.latencies, 50)),
                "p99": _round(loadgen.percentile(tally.latencies, 99)),
                "max": _round(max(tally.latencies, default=None)),
            },
            "workers_at_start": sorted(observed.workers_first),
            "worker_pids_seen": sorted(observed.workers_seen),
            "booting_worker_lines": observed.booted,
            "worker_restarts": observed.restarts,
            "memory": mem,
            "memory_growth_after_warmup_percent": round(100 * growth, 2) if math.isfinite(growth) else None,
            "server_alive_at_end": observed.alive,
            "timeline": observed.timeline,
        }
    )
    missed = [
        goal
        for goal, failed in (
            ("unexpected statuses", tally.unexpected),
            ("changed answers", tally.changed),
            ("worker restarts", observed.restarts),
            ("memory growth", growth >= MEMORY_GROWTH_GOAL),
            ("server died", not observed.alive or result.get("error")),
        )
        if failed
    ]
    result["goals_missed"] = missed
    return missed


def _percent(value: float | None) -> str:
    return "not measured" if value is None else f"{value:+.2f}%"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ping(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


def _cpu() -> dict:
    from bench.document import isa_class as cpu_class
    from qa.cpu import cpu_flags, cpu_name

    return {"model_name": cpu_name(), "class": cpu_class(cpu_flags())}


def summary(result: dict) -> str:
    if "requests" not in result:
        return f"soak: {result.get('error', 'failed')}"
    mem = result["memory"]
    lat = result["valid_latency_s"]

    def statuses(kind: str) -> str:
        counts = result["statuses"][kind]
        return f"{sum(counts.values())} (" + ", ".join(f"{s} x {n}" for s, n in counts.items()) + ")"

    lines = [
        f"soak: {result['server']}, model {result['model']}, {result['seconds'] / 60:.1f} min at "
        f"concurrency {result['concurrency']} (warm-up {result['warmup_s']:.0f} s); CPU {result['cpu']['model_name']} "
        f"[{result['cpu']['class']}]",
        f"command: {result['command']}",
        f"requests: {result['requests']} ({result['requests_per_s']}/s); valid {statuses('valid')}; "
        f"invalid {statuses('invalid')}",
        f"unexpected statuses: {result['unexpected']} (goal 0)"
        + "".join(f"\n  {e}" for e in result["unexpected_examples"]),
        f"changed answers: {result['changed_answers']} (goal 0; largest score drift {result['max_score_drift']:.2e})"
        + "".join(f"\n  {e}" for e in result["changed_examples"]),
        f"worker restarts: {result['worker_restarts']} (goal 0; workers {result['workers_at_start']}, "
        f"pids seen {result['worker_pids_seen']}, 'Booting worker' lines {result['booting_worker_lines']})",
        f"memory usage: start {_mib(mem['start'].get('usage_bytes'))}, warm {_mib(mem['warm'].get('usage_bytes'))}, "
        f"end {_mib(mem['end'].get('usage_bytes'))}: growth after warm-up "
        f"{_percent(result['memory_growth_after_warmup_percent'])} (goal < {100 * MEMORY_GROWTH_GOAL:.0f}%)",
        "  "
        + "; ".join(
            f"{label}: start {_mib(mem['start'].get(key))}, warm {_mib(mem['warm'].get(key))}, "
            f"end {_mib(mem['end'].get(key))}"
            for label, key in (("anon (RSS)", "anon_bytes"), ("PSS", "pss_bytes"))
            if key in mem["start"]
        ),
        *(
            [
                f"  docker stats: start {mem['start']['docker_stats']}, warm {mem['warm'].get('docker_stats')}, end {mem['end'].get('docker_stats')}"
            ]
            if "docker_stats" in mem["start"]
            else []
        ),
        f"valid latency: p50 {lat['p50']} s, p99 {lat['p99']} s, max {lat['max']} s",
        "result: " + ("PASS" if not result["goals_missed"] else "FAIL: " + ", ".join(result["goals_missed"])),
    ]
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    if result.get("server_log"):
        lines.append(f"server log: {result['server_log']}")
    return "\n".join(lines)


def _env_item(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key:
        raise argparse.ArgumentTypeError(f"--env {text!r}: use KEY=VALUE")
    return key, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="the image to soak (docker run, host network, 127.0.0.1)")
    where.add_argument("--host", action="store_true", help="soak the host stack (entrypoint.py serve)")
    p.add_argument("--model", type=Path, required=True, help="model directory (mounted at /opt/ml/model)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup-s", type=float, default=None, help="default: 10%% of the run, 10-60 s")
    p.add_argument("--json", type=Path, default=None, help="write the summary and timeline here")
    p.add_argument("--env", type=_env_item, action="append", default=[], help="KEY=VALUE for the server")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if not args.model.is_dir():
        p.error(f"--model {args.model}: not a directory")
    if args.minutes <= 0 or args.concurrency < 1:
        p.error("--minutes must be > 0 and --concurrency >= 1")
    if args.warmup_s is None:
        args.warmup_s = min(60.0, max(10.0, args.minutes * 6.0))
    if args.warmup_s >= args.minutes * 60:
        p.error("--warmup-s must be shorter than the run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on SIGTERM too
    result, code = soak(args)
    print(summary(result), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"soak: wrote {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
