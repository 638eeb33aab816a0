"""What an operator graphs: one structured log line per request, Prometheus metrics on
GET /metrics, and (opt-in, QA_CLOUDWATCH_EMF) CloudWatch embedded-metric-format lines.

Prometheus runs in prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set
(the entrypoint sets it for gunicorn: every worker writes its own files there and any worker's
/metrics adds them up); without it (tests, a single process) the default registry is served.
"""

from __future__ import annotations

import logging
import os
import sys

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from qa.accounting import RequestAccount
from qa.memory import resident_bytes
from serving.emf import emf_line as emf_record

request_log = logging.getLogger("serving.requests")

PHASES = ("parse", "tokenize", "queue", "forward", "decode", "encode", "transform", "total")
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUESTS = Counter("qa_requests", "Invocations answered, by HTTP status", ["status"])
PHASE_SECONDS = Histogram(
    "qa_request_phase_seconds", "Time per request in each phase", ["phase"], buckets=_SECONDS
)
BATCH_WINDOWS = Histogram(
    "qa_forward_batch_windows",
    "Windows in each forward pass a request rode in",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
QUEUED_WINDOWS = Histogram(
    "qa_queued_windows_on_arrival",
    "Windows already waiting in the batcher when a request arrived",
    buckets=(0, 1, 4, 16, 64, 256, 1024),
)
ITEMS = Counter("qa_items", "Question/context items answered")
WINDOWS = Counter("qa_windows", "Model windows run")
TOKENS = Counter("qa_tokens", "Unpadded tokens run")
MODEL_LOAD_SECONDS = Gauge(
    "qa_model_load_seconds", "Model load time, per worker", multiprocess_mode="liveall"
)
RESIDENT_BYTES = Gauge("qa_resident_memory_bytes", "Resident memory, per worker", multiprocess_mode="liveall")


def model_loaded(seconds: float) -> None:
    MODEL_LOAD_SECONDS.set(seconds)
    RESIDENT_BYTES.set(resident_bytes())


def phase_seconds(account: RequestAccount, total_s: float) -> dict[str, float]:
    """The phases this request went through, in seconds (absent: it did not reach that phase)."""
    phases = dict(account.phases)
    if account.queue_wait_s is not None:
        phases["queue"] = account.queue_wait_s
    if account.forward_s is not None:
        phases["forward"] = account.forward_s
    phases["total"] = total_s
    return {name: phases[name] for name in PHASES if name in phases}


def request_served(
    account: RequestAccount,
    status: int,
    total_s: float,
    *,
    request_id: str | None,
    inference_id: str | None,
    error: str | None,
    emf: str | None,
) -> None:
    """Count, log and (opt-in) emit one answered invocation."""
    phases = phase_seconds(account, total_s)
    REQUESTS.labels(str(status)).inc()
    for name, seconds in phases.items():
        PHASE_SECONDS.labels(name).observe(seconds)
    for size in account.batch_sizes:
        BATCH_WINDOWS.observe(size)
    if account.submitted is not None:
        QUEUED_WINDOWS.observe(account.queued_before)
    ITEMS.inc(account.items)
    WINDOWS.inc(account.windows)
    TOKENS.inc(account.tokens)
    RESIDENT_BYTES.set(resident_bytes())
    fields = {
        "request_id": request_id,
        "inference_id": inference_id,
        "status": status,
        "items": account.items,
        "windows": account.windows,
        "tokens": account.tokens,
        "batch_sizes": account.batch_sizes,
        "queued_before": account.queued_before,
        **{f"{name}_ms": round(seconds * 1000, 2) for name, seconds in phases.items()},
    }
    if error:
        fields["error"] = error
    # A 5xx is the server's failure: WARNING, so that alerts on the log's level catch it.
    level = logging.WARNING if status >= 500 else logging.INFO
    request_log.log(
        level, "POST /invocations %d in %.1f ms", status, total_s * 1000, extra={"fields": fields}
    )
    if emf:
        sys.stdout.write(emf_line(emf, fields) + "\n")
        sys.stdout.flush()


def emf_line(namespace: str, fields: dict) -> str:
    """The request's EMF record: its latency, queue and forward times, windows and error flag."""
    metrics: dict[str, tuple[float, str]] = {"Latency": (fields["total_ms"], "Milliseconds")}
    for name in ("queue_ms", "forward_ms"):
        if name in fields:
            metrics[name.removesuffix("_ms").capitalize() + "Time"] = (fields[name], "Milliseconds")
    metrics["Windows"] = (fields["windows"], "Count")
    metrics["Errors"] = (int(fields["status"] >= 400), "Count")
    return emf_record(
        namespace, {"Status": str(fields["status"])}, metrics, {"RequestId": fields["request_id"]}
    )


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of every worker's metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit: the dead worker's live gauges leave the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
