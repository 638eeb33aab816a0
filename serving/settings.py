"""The one settings object, built from the environment once at start-up.

Nothing else in the project reads `os.environ` for configuration: the entrypoint builds a
`Settings` with `Settings.from_env(os.environ)` and hands it down (tests pass a plain dict).
A malformed value raises `SettingsError` naming the variable and what it accepts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}
SUPPORTED_TASK = "question-answering"
# Heap from the container's memory limit, a tenth of it (MMS's front end only routes requests),
# and exit on running out of it: the container then exits non-zero and SageMaker replaces it.
MMS_JVM_OPTIONS = "-XX:+UseContainerSupport -XX:MaxRAMPercentage=10 -XX:+ExitOnOutOfMemoryError"
# Inference backends and the precisions each supports (code/qa_backends.py implements them);
# QA_BACKEND=auto picks one per precision from the CPU (code/qa_plan.py).
BACKEND_PRECISIONS = {
    "torch": ("fp32", "bf16"),
    "onnx": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
PRECISIONS = ("fp32", "bf16", "int8")


def unsupported_combination(backend: str, precision: str) -> str | None:
    """What is wrong with running this precision on this backend, or None when it runs."""
    if precision in BACKEND_PRECISIONS[backend]:
        return None
    return (
        f"QA_PRECISION={precision} is not supported with QA_BACKEND={backend}: combinations are "
        + ", ".join(f"{b} with {'/'.join(p)}" for b, p in BACKEND_PRECISIONS.items())
    )


def _int(env: Mapping[str, str], key: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise SettingsError(f"{key}={value} is out of range: it must be {bound}")
    return value


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
    batch_transform: bool = False
    batch_strategy: str = "MULTI_RECORD"
    max_concurrent_transforms: int = 1
    multi_model: bool = False  # served by Multi Model Server (serving/mms_service.py)
    # MMS's JVM (the front end only: models run in Python workers). The toolkit's default turns
    # container support off (-XX:-UseContainerSupport), sizing the heap from the host's memory.
    mms_jvm_options: str = MMS_JVM_OPTIONS
    log_level: int = logging.INFO
    hf_model_id: str | None = None
    hf_model_revision: str | None = None
    hf_token: str | None = None
    # Project knobs (README, "Configuration")
    bind_host: str = "0.0.0.0"
    model_dir: Path = Path("/opt/ml/model")
    baked_model_dir: Path = Path("/opt/program/model")
    run_dir: Path = Path("/tmp/qa-serving")
    # Requests in flight per worker; their windows wait in the batcher's queue, which bounds the work.
    threads_per_worker: int = 16
    torch_threads: int = 1
    preload: bool = False
    max_items_per_request: int = 64
    max_windows_per_request: int = 256
    forward_batch_size: int = 16
    allow_pickle_weights: bool = False
    install_user_requirements: bool = True
    shutdown_timeout_s: int = 25
    cpu_limit: float = 1.0
    backend: str = "auto"
    precision: str = "fp32"
    graph_cache_dir: Path | None = None  # None: <run_dir>/graphs
    batch_wait_ms: int = 2
    # Padded tokens per forward pass: ONNX Runtime gains nothing per window from bigger batches on
    # CPU, and at 4096 throughput at concurrency 16 halved (BENCHMARKS.md).
    batch_max_tokens: int = 1024
    # Padding as a share of a batch's tokens: on an AVX2 CPU, a batch of 4 mixed-length windows
    # (25% padding) cost 1.3x their time one by one (BENCHMARKS.md).
    batch_max_padding_percent: int = 10
    batch_queue_windows: int = 512
    # Forward passes at once per worker (the batcher's lanes), each with QA_TORCH_THREADS threads;
    # None: the execution plan's number for the backend (code/qa_plan.py).
    parallel_batches: int | None = None

    @property
    def graph_cache(self) -> Path:
        """Where graphs made at start-up are kept (code/qa_graphs.py)."""
        return self.graph_cache_dir or self.run_dir / "graphs"

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

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
        workers = _int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", default_workers, 1, 64)
        backend = _choice(env, "QA_BACKEND", "auto", ("auto", *BACKEND_PRECISIONS))
        precision = _choice(env, "QA_PRECISION", "fp32", PRECISIONS)
        if backend != "auto" and (problem := unsupported_combination(backend, precision)):
            raise SettingsError(problem)
        default_torch_threads = max(1, math.floor(cpus / workers))

        return cls(
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            workers=workers,
            request_timeout_s=_int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 60, 1, 3600),
            max_payload_mb=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, 1, 100),
            batch_transform=_bool(env, "SAGEMAKER_BATCH", False),
            batch_strategy=_choice(
                env, "SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD", ("MULTI_RECORD", "SINGLE_RECORD")
            ),
            max_concurrent_transforms=_int(env, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", workers, 1, 1024),
            multi_model=_bool(env, "SAGEMAKER_MULTI_MODEL", False),
            mms_jvm_options=env.get("SAGEMAKER_MODEL_SERVER_VMARGS", "").strip() or MMS_JVM_OPTIONS,
            log_level=_log_level(env, "SAGEMAKER_CONTAINER_LOG_LEVEL"),
            hf_model_id=env.get("HF_MODEL_ID", "").strip() or None,
            hf_model_revision=env.get("HF_MODEL_REVISION", "").strip() or None,
            hf_token=(env.get("HF_TOKEN") or env.get("HF_API_TOKEN") or "").strip() or None,
            bind_host=env.get("QA_BIND_HOST", "").strip() or "0.0.0.0",
            model_dir=Path(env.get("QA_MODEL_DIR", "").strip() or "/opt/ml/model"),
            baked_model_dir=Path(env.get("QA_BAKED_MODEL_DIR", "").strip() or "/opt/program/model"),
            run_dir=Path(env.get("QA_RUN_DIR", "").strip() or "/tmp/qa-serving"),
            threads_per_worker=_int(env, "QA_THREADS_PER_WORKER", 16, 1, 256),
            torch_threads=_int(env, "QA_TORCH_THREADS", default_torch_threads, 1, 256),
            preload=_bool(env, "QA_PRELOAD", False),
            max_items_per_request=_int(env, "QA_MAX_ITEMS_PER_REQUEST", 64, 1, 100000),
            max_windows_per_request=_int(env, "QA_MAX_WINDOWS_PER_REQUEST", 256, 1, 1000000),
            forward_batch_size=_int(env, "QA_FORWARD_BATCH_SIZE", 16, 1, 1024),
            allow_pickle_weights=_bool(env, "QA_ALLOW_PICKLE_WEIGHTS", False),
            install_user_requirements=_bool(env, "QA_INSTALL_USER_REQUIREMENTS", True),
            shutdown_timeout_s=_int(env, "QA_SHUTDOWN_TIMEOUT_S", 25, 1, 3600),
            cpu_limit=cpus,
            backend=backend,
            precision=precision,
            graph_cache_dir=Path(env["QA_GRAPH_CACHE_DIR"].strip())
            if env.get("QA_GRAPH_CACHE_DIR", "").strip()
            else None,
            batch_wait_ms=_int(env, "QA_BATCH_WAIT_MS", 2, 0, 1000),
            batch_max_tokens=_int(env, "QA_BATCH_MAX_TOKENS", 1024, 1, 10_000_000),
            batch_max_padding_percent=_int(env, "QA_BATCH_MAX_PADDING_PERCENT", 10, 0, 100),
            parallel_batches=_int(env, "QA_PARALLEL_BATCHES", None, 1, 64),
            batch_queue_windows=_int(env, "QA_BATCH_QUEUE_WINDOWS", 512, 1, 10_000_000),
        )

    def to_log_dict(self) -> dict:
        """The resolved settings for the start-up log line, with the token hidden."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        if out["hf_token"]:
            out["hf_token"] = "***"
        return out
