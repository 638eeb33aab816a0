"""The one settings object: every variable the container reads (docs/contract.md#configuration).

Each process of the stack builds its own with `Settings.from_env(os.environ)` (the entrypoint,
gunicorn's config and workers, MMS's workers: they share the environment, not objects); tests
pass a plain dict or build `Settings(...)` directly. Either way a `Settings` checks itself when
built: a malformed or out-of-range value raises `SettingsError` naming the variable and what it
accepts. The QA library's part is `settings.qa` (qa/options.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

from qa.cpu import CPU_S_PER_RECORD, RECORDS_PER_MB
from qa.options import BACKENDS, JSONLINES_ERRORS, MEMORY_CHECKS, PRECISIONS, OptionsError, QAOptions


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}
SUPPORTED_TASK = "question-answering"
# Heap from the container's memory limit, a tenth of it (MMS's front end only routes requests),
# and exit on running out of it: the container then exits non-zero and SageMaker replaces it.
MMS_JVM_OPTIONS = "-XX:+UseContainerSupport -XX:MaxRAMPercentage=10 -XX:+ExitOnOutOfMemoryError"
BATCH_STRATEGIES = ("MULTI_RECORD", "SINGLE_RECORD")
LOG_FORMATS = ("text", "json")
# On SIGTERM nginx drains first; gunicorn then gets this long to stop its (idle) workers.
GUNICORN_STOP_S = 5
# The kernel's cap on a listening socket's queue (net.core.somaxconn, 4096 since Linux 5.4), where
# waiting requests wait: more would be refused by the kernel, not by nginx's cheap 503.
MAX_WAITING_REQUESTS = 4096
# Integer settings: field -> (variable, lowest, highest). Checked however Settings is built.
INT_BOUNDS = {
    "port": ("SAGEMAKER_BIND_TO_PORT", 1, 65535),
    "workers": ("SAGEMAKER_MODEL_SERVER_WORKERS", 1, 64),
    "request_timeout_s": ("SAGEMAKER_MODEL_SERVER_TIMEOUT", 1, 3600),
    "max_payload_mb": ("SAGEMAKER_MAX_PAYLOAD_IN_MB", 1, 100),
    "max_concurrent_transforms": ("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", 1, 1024),
    "threads_per_worker": ("QA_THREADS_PER_WORKER", 1, 256),
    "max_waiting_requests": ("QA_MAX_WAITING_REQUESTS", 0, MAX_WAITING_REQUESTS),
    "torch_threads": ("QA_TORCH_THREADS", 1, 256),
    "max_items_per_request": ("QA_MAX_ITEMS_PER_REQUEST", 1, 100000),
    "max_windows_per_request": ("QA_MAX_WINDOWS_PER_REQUEST", 1, 1000000),
    "forward_batch_size": ("QA_FORWARD_BATCH_SIZE", 1, 1024),
    "shutdown_timeout_s": ("QA_SHUTDOWN_TIMEOUT_S", 1, 3600),
    "batch_wait_ms": ("QA_BATCH_WAIT_MS", 0, 1000),
    "batch_max_tokens": ("QA_BATCH_MAX_TOKENS", 1, 10_000_000),
    "batch_max_padding_percent": ("QA_BATCH_MAX_PADDING_PERCENT", 0, 100),
    "parallel_batches": ("QA_PARALLEL_BATCHES", 1, 64),
    "model_memory_report_s": ("QA_MODEL_MEMORY_REPORT_S", 1, 3600),
}
# The QA library's options (qa/options.py), taken as they are from the fields of the same name.
QA_FIELDS = tuple(f.name for f in dataclasses.fields(QAOptions) if f.name != "graph_cache")


def _int(env: Mapping[str, str], field: str, default: int | None) -> int | None:
    key = INT_BOUNDS[field][0]
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer") from None


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{key}={raw!r} is not a boolean: use true or false")


def _choice(env: Mapping[str, str], key: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    if raw not in allowed:
        raise SettingsError(f"{key}={raw!r} is not supported: allowed values are {', '.join(allowed)}")
    return raw


def _log_level(env: Mapping[str, str], key: str) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return logging.INFO
    if raw.isdigit():
        return int(raw)
    level = LOG_LEVELS.get(raw.upper())
    if level is None:
        raise SettingsError(
            f"{key}={raw!r} is not a log level: use a number or one of {', '.join(LOG_LEVELS)}"
        )
    return level


def container_cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: the cgroup quota if set, else the affinity mask.

    `os.cpu_count()` reports the host's CPUs, which oversubscribes a container limited with
    `--cpus` (SageMaker instances are not, but local runs and other hosts often are).
    """
    cpus = float(len(os.sched_getaffinity(0)))
    try:  # cgroup v2
        quota, period = (cgroup_root / "cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            if quota > 0:
                cpus = min(cpus, quota / period)
        except (OSError, ValueError):
            pass
    return max(cpus, 1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    # SageMaker's variables
    port: int = 8080
    workers: int = 1
    request_timeout_s: int = 60
    max_payload_mb: int = 6
    batch_strategy: str = "MULTI_RECORD"
    max_concurrent_transforms: int = 1
    multi_model: bool = False  # served by Multi Model Server (serving/mms_service.py)
    # A Batch Transform container (SAGEMAKER_BATCH): jsonlines requests stream (qa/options.py), a
    # 600 s budget as SageMaker's invocation timeout, per-record errors.
    batch_transform: bool = False
    # MMS's JVM (the front end only: models run in Python workers). The toolkit's default turns
    # container support off (-XX:-UseContainerSupport), sizing the heap from the host's memory.
    mms_jvm_options: str = MMS_JVM_OPTIONS
    log_level: int = logging.INFO
    log_format: str = "text"  # or json: one JSON object per line, for CloudWatch Logs Insights
    # CloudWatch embedded-metric-format lines on stdout, one per request, under this namespace (None: off).
    cloudwatch_emf_namespace: str | None = None
    hf_model_id: str | None = None
    hf_model_revision: str | None = None
    hf_token: str | None = None
    # Project knobs (README, "Configuration")
    bind_host: str = "0.0.0.0"
    model_dir: Path = Path("/opt/ml/model")
    baked_model_dir: Path = Path("/opt/program/model")
    run_dir: Path = Path("/tmp/qa-serving")
    # Requests each worker serves at once (their windows share the batcher's forward passes).
    threads_per_worker: int = 16
    # /invocations requests waiting for a worker, in arrival order, past those being served; nginx
    # answers the rest 503 at once. None: what the instance answers within the budget (waiting_requests).
    max_waiting_requests: int | None = None
    torch_threads: int = 1
    preload: bool = False
    max_items_per_request: int = 64
    max_windows_per_request: int = 256
    forward_batch_size: int = 16
    allow_pickle_weights: bool = False
    install_user_requirements: bool = True
    # The user's entry point in <model_dir>/code (SAGEMAKER_PROGRAM, as the AWS toolkits name it).
    user_program: str = "inference.py"
    # Who nginx's and gunicorn's workers run as when the container runs as root (privileges.py).
    worker_user: str = "qa"
    shutdown_timeout_s: int = 25
    cpu_limit: float = 1.0
    backend: str = "auto"
    precision: str = "fp32"
    graph_cache_dir: Path | None = None  # None: <run_dir>/graphs
    batch_wait_ms: int = 2
    batch_max_tokens: int = 1024  # why these batch bounds: qa/options.py
    batch_max_padding_percent: int = 10
    jsonlines_errors: str = "request"  # or record: a bad jsonlines line answers alone (qa/options.py)
    # A load that would not fit (qa/memory.py): refused on a multi-model endpoint (507, and SageMaker
    # unloads another model), else logged: one model that does not fit fails either way.
    memory_check: str = "warn"
    # Multi-model endpoints: how often each loaded model's memory goes out as an EMF metric.
    model_memory_report_s: int = 60
    # Per-request accounting: the structured log line, the metrics, EMF (off only to measure its cost).
    request_metrics: bool = True
    # Forward passes at once per worker (the batcher's lanes), each with QA_TORCH_THREADS threads;
    # None: the execution plan's number for the backend (qa/plan.py).
    parallel_batches: int | None = None

    def __post_init__(self) -> None:
        for field, (key, lo, hi) in INT_BOUNDS.items():
            value = getattr(self, field)
            if value is not None and not lo <= value <= hi:
                raise SettingsError(f"{key}={value} is out of range: it must be between {lo} and {hi}")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"QA_LOG_FORMAT={self.log_format!r} is not supported: allowed values are text, json"
            )
        if self.batch_strategy not in BATCH_STRATEGIES:
            raise SettingsError(
                f"SAGEMAKER_BATCH_STRATEGY={self.batch_strategy!r} is not supported: allowed values are "
                + ", ".join(BATCH_STRATEGIES)
            )
        try:
            self.qa  # noqa: B018 - built now, so that a bad combination fails here and not at model load
        except OptionsError as exc:
            raise SettingsError(str(exc)) from None

    @cached_property
    def qa(self) -> QAOptions:
        """The QA library's options (qa/options.py)."""
        return QAOptions(graph_cache=self.graph_cache, **{name: getattr(self, name) for name in QA_FIELDS})

    @property
    def graph_cache(self) -> Path:
        """Where graphs made at start-up are kept (qa/graphs.py)."""
        return self.graph_cache_dir or self.run_dir / "graphs"

    @property
    def log_level_name(self) -> str:
        """The level as gunicorn and Python name it: debug, info, warning, error or critical."""
        for name in ("debug", "info", "warning", "error"):
            if self.log_level <= logging.getLevelName(name.upper()):
                return name
        return "critical"

    @property
    def gunicorn_stop_s(self) -> int:
        """gunicorn's graceful timeout: what the shutdown budget keeps for it after nginx drained."""
        return min(GUNICORN_STOP_S, self.shutdown_timeout_s)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, cpu_limit: float | None = None) -> Settings:
        cpus = container_cpu_limit() if cpu_limit is None else cpu_limit
        task = env.get("HF_TASK", "").strip()
        if task and task != SUPPORTED_TASK:
            raise SettingsError(
                f"HF_TASK={task!r} is not supported: this image serves only {SUPPORTED_TASK!r}"
            )

        # One worker per 4 CPUs, each with an equal share of them as intra-op threads: on 2 CPUs one
        # worker with 2 threads beat two workers (p99 at concurrency 4: 283 vs 460 ms, half the
        # memory; BENCHMARKS.md). Never more threads in all than the CPUs the container may use.
        default_workers = max(1, math.floor(cpus / 4))
        workers = _int(env, "workers", default_workers)
        if workers < 1:  # the default threads divide by it
            raise SettingsError(
                f"SAGEMAKER_MODEL_SERVER_WORKERS={workers} is out of range: it must be between 1 and 64"
            )
        default_torch_threads = max(1, math.floor(cpus / workers))
        batch = _bool(env, "SAGEMAKER_BATCH", False)

        return cls(
            port=_int(env, "port", 8080),
            workers=workers,
            # SageMaker waits InvocationsTimeoutInSeconds (600 s by default) per mini-batch.
            request_timeout_s=_int(env, "request_timeout_s", 600 if batch else 60),
            max_payload_mb=_int(env, "max_payload_mb", 6),
            batch_strategy=_choice(env, "SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD", BATCH_STRATEGIES),
            max_concurrent_transforms=_int(env, "max_concurrent_transforms", workers),
            multi_model=_bool(env, "SAGEMAKER_MULTI_MODEL", False),
            batch_transform=batch,
            mms_jvm_options=env.get("SAGEMAKER_MODEL_SERVER_VMARGS", "").strip() or MMS_JVM_OPTIONS,
            log_level=_log_level(env, "SAGEMAKER_CONTAINER_LOG_LEVEL"),
            log_format=_choice(env, "QA_LOG_FORMAT", "text", LOG_FORMATS),
            cloudwatch_emf_namespace=env.get("QA_CLOUDWATCH_EMF_NAMESPACE", "").strip() or None,
            hf_model_id=env.get("HF_MODEL_ID", "").strip() or None,
            hf_model_revision=env.get("HF_MODEL_REVISION", "").strip() or None,
            hf_token=(env.get("HF_TOKEN") or env.get("HF_API_TOKEN") or "").strip() or None,
            bind_host=env.get("QA_BIND_HOST", "").strip() or "0.0.0.0",
            model_dir=Path(env.get("QA_MODEL_DIR", "").strip() or "/opt/ml/model"),
            baked_model_dir=Path(env.get("QA_BAKED_MODEL_DIR", "").strip() or "/opt/program/model"),
            run_dir=Path(env.get("QA_RUN_DIR", "").strip() or "/tmp/qa-serving"),
            threads_per_worker=_int(env, "threads_per_worker", 16),
            max_waiting_requests=_int(env, "max_waiting_requests", None),
            torch_threads=_int(env, "torch_threads", default_torch_threads),
            preload=_bool(env, "QA_PRELOAD", False),
            max_items_per_request=_int(env, "max_items_per_request", 64),
            max_windows_per_request=_int(env, "max_windows_per_request", 256),
            forward_batch_size=_int(env, "forward_batch_size", 16),
            allow_pickle_weights=_bool(env, "QA_ALLOW_PICKLE_WEIGHTS", False),
            install_user_requirements=_bool(env, "QA_INSTALL_USER_REQUIREMENTS", True),
            user_program=_program(env),
            worker_user=env.get("QA_WORKER_USER", "").strip() or "qa",
            shutdown_timeout_s=_int(env, "shutdown_timeout_s", 25),
            cpu_limit=cpus,
            backend=_choice(env, "QA_BACKEND", "auto", BACKENDS),
            precision=_choice(env, "QA_PRECISION", "fp32", PRECISIONS),
            graph_cache_dir=Path(env["QA_GRAPH_CACHE_DIR"].strip())
            if env.get("QA_GRAPH_CACHE_DIR", "").strip()
            else None,
            batch_wait_ms=_int(env, "batch_wait_ms", 2),
            batch_max_tokens=_int(env, "batch_max_tokens", 1024),
            batch_max_padding_percent=_int(env, "batch_max_padding_percent", 10),
            parallel_batches=_int(env, "parallel_batches", None),
            # One bad record must not sink a million-record job: in Batch Transform it answers alone.
            jsonlines_errors=_choice(
                env, "QA_JSONLINES_ERRORS", "record" if batch else "request", JSONLINES_ERRORS
            ),
            memory_check=_choice(
                env,
                "QA_MEMORY_CHECK",
                "refuse" if _bool(env, "SAGEMAKER_MULTI_MODEL", False) else "warn",
                MEMORY_CHECKS,
            ),
            model_memory_report_s=_int(env, "model_memory_report_s", 60),
            request_metrics=_bool(env, "QA_REQUEST_METRICS", True),
        )

    def to_log_dict(self) -> dict:
        """The resolved settings for the start-up log line, with the token hidden."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        if out["hf_token"]:
            out["hf_token"] = "***"
        return out


def _program(env: Mapping[str, str]) -> str:
    """SAGEMAKER_PROGRAM: a file in <model_dir>/code, with or without its .py (the SDK sets it
    when it repacks an entry_point other than inference.py)."""
    name = env.get("SAGEMAKER_PROGRAM", "").strip() or "inference.py"
    if "/" in name or name.startswith("."):
        raise SettingsError(
            f"SAGEMAKER_PROGRAM={name!r} must be a file name in <model_dir>/code, such as inference.py"
        )
    return name if name.endswith(".py") else f"{name}.py"


def batch_payload_mb(settings: Settings, cpu_class: str) -> int:
    """The mini-batch size /execution-parameters advertises: what one worker's CPUs answer in half
    the invocation budget (SAGEMAKER_MODEL_SERVER_TIMEOUT, 600 s in Batch Transform), at the
    benchmark's cost per ~1 KB record for this precision and CPU class; at least 1 MB, at most the
    body limit. 2 CPUs, AVX-512: fp32 2 MB (~230 s), bf16 5 MB, int8 6 MB."""
    if not settings.batch_transform:  # only a Batch Transform job asks
        return settings.max_payload_mb
    cpu_s = CPU_S_PER_RECORD[cpu_class][settings.precision]
    cpus_per_worker = settings.cpu_limit / settings.workers
    fits = 0.5 * settings.request_timeout_s * cpus_per_worker / (cpu_s * RECORDS_PER_MB)
    return max(1, min(settings.max_payload_mb, math.floor(fits)))


def waiting_requests(settings: Settings, cpu_class: str) -> int:
    """How many /invocations requests may wait for a worker (QA_MAX_WAITING_REQUESTS): by default
    what the instance answers within one request budget (SAGEMAKER_MODEL_SERVER_TIMEOUT), at the
    benchmark's cost per ~1 KB request for this precision and CPU class, so that a request admitted
    last still fits its budget. 2 CPUs, AVX-512, 60 s: fp32 521, bf16 1176, int8 1935. At most
    the kernel's listen queue (MAX_WAITING_REQUESTS) less the requests being served."""
    in_service = settings.workers * settings.threads_per_worker
    room = max(0, MAX_WAITING_REQUESTS - in_service)
    if settings.max_waiting_requests is not None:
        return min(settings.max_waiting_requests, room)
    per_second = settings.cpu_limit / CPU_S_PER_RECORD[cpu_class][settings.precision]
    return min(math.floor(settings.request_timeout_s * per_second), room)


def admitted_requests(settings: Settings, cpu_class: str) -> int:
    """POST /invocations requests nginx lets in at once: those the workers serve and those waiting."""
    return settings.workers * settings.threads_per_worker + waiting_requests(settings, cpu_class)
