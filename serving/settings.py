"""The one settings object: every variable the container reads (docs/contract.md#configuration).

Each setting is declared once, as a field with its variable, default, bounds and doc
(qa/setting.py): the QA library's in `QAOptions` (qa/options.py), the serving layer's below. From
the declarations come `Settings`, its parsing from the environment, its checks and messages,
`settings.qa`, and the README's and the contract's tables (serving/settings_docs.py).

The entrypoint resolves them once, `Settings.from_env(os.environ)`, decides what only it can
(who the workers run as), and hands the result down as a JSON file (`save`) whose path is in
RESOLVED_SETTINGS: gunicorn's config and workers and MMS's workers read it back with
`Settings.load(os.environ)`, which falls back to `from_env` in a process started without it (tests,
scripts). Tests also build `Settings(...)` directly. Either way a `Settings` checks itself when
built: a malformed or out-of-range value raises `SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, get_args, get_type_hints

from qa.cpu import CPU_S_PER_RECORD, RECORDS_PER_MB
from qa.options import OptionsError, QAOptions
from qa.setting import Setting, first_problem, setting, settings_of

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}
# Heap from the container's memory limit, a tenth of it (MMS's front end only routes requests),
# and exit on running out of it: the container then exits non-zero and SageMaker replaces it.
MMS_JVM_OPTIONS = "-XX:+UseContainerSupport -XX:MaxRAMPercentage=10 -XX:+ExitOnOutOfMemoryError"
# On SIGTERM nginx drains first; gunicorn then gets this long to stop its (idle) workers.
GUNICORN_STOP_S = 5
# The kernel's cap on a listening socket's queue (net.core.somaxconn, 4096 since Linux 5.4), where
# waiting requests wait: more would be refused by the kernel, not by nginx's cheap 503.
MAX_WAITING_REQUESTS = 4096
# The path of the entrypoint's resolved settings (`Settings.save`), for the processes it starts.
RESOLVED_SETTINGS = "QA_RESOLVED_SETTINGS"


def _log_level(raw: str) -> int:
    if raw.isdigit():
        return int(raw)
    if raw.upper() not in LOG_LEVELS:
        raise ValueError(f"is not a log level: use a number or one of {', '.join(LOG_LEVELS)}")
    return LOG_LEVELS[raw.upper()]


def _program(raw: str) -> str:
    """A file in <model_dir>/code, with or without its .py (the SageMaker SDK sets it when it
    repacks an entry_point other than inference.py)."""
    if "/" in raw or raw.startswith("."):
        raise ValueError("must be a file name in <model_dir>/code, such as inference.py")
    return raw if raw.endswith(".py") else f"{raw}.py"


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


# The QA library's options as the container resolves them: defaults that depend on other settings.
_IN_THE_CONTAINER = {
    # An equal share of the CPUs per worker: never more threads in all than the container may use.
    "inference_threads": dict(
        derive=lambda r: max(1, math.floor(r["cpu_limit"] / r["workers"])),
        default_doc="CPUs / workers, at least 1",
    ),
    # SageMaker waits InvocationsTimeoutInSeconds (600 s by default) per mini-batch.
    "request_timeout_s": dict(
        derive=lambda r: 600 if r["batch_transform"] else 60, default_doc="`60`; `600` in Batch Transform"
    ),
    # One bad record must not sink a million-record job: in Batch Transform it answers alone.
    "jsonlines_errors": dict(
        derive=lambda r: "record" if r["batch_transform"] else "request",
        default_doc="`request`; `record` in Batch Transform",
    ),
    # A multi-model endpoint is packed for density and its models share the CPUs: one pass at a
    # time per model, on one form of it (the adaptive plan's second form cost each further int8
    # model ~80 MiB: 2 models 667 MiB vs 565 with one, slim image, 2026-12-03).
    "parallel_batches": dict(
        derive=lambda r: 1 if r["multi_model"] else None,
        default_doc=f"{settings_of(QAOptions)['parallel_batches'].default_doc}; 1 on multi-model endpoints",
    ),
    # A multi-model endpoint answers 507 and SageMaker unloads another model; elsewhere one model
    # that does not fit fails either way.
    "memory_check": dict(
        derive=lambda r: "refuse" if r["multi_model"] else "warn",
        default_doc="`refuse` on multi-model endpoints, else `warn`",
    ),
}
_QA_HINTS = get_type_hints(QAOptions)
_QASettings = dataclasses.make_dataclass(
    "_QASettings",
    [
        (
            name,
            _QA_HINTS[name],
            dataclasses.field(
                default=QAOptions.__dataclass_fields__[name].default,
                metadata={"setting": dataclasses.replace(spec, **_IN_THE_CONTAINER.get(name, {}))},
            ),
        )
        for name, spec in settings_of(QAOptions).items()
    ],
    frozen=True,
)


@dataclasses.dataclass(frozen=True)
class Settings(_QASettings):
    """The QA library's settings (qa/options.py, inherited), then the serving layer's."""

    port: int = setting(
        "SAGEMAKER_BIND_TO_PORT", 8080, "the port nginx (or MMS) listens on", bounds=(1, 65535)
    )
    # One worker per 4 CPUs, each with an equal share of them as inference threads: on 2 CPUs one
    # worker with 2 threads beat two workers (p99 at concurrency 4: 283 vs 460 ms, half the
    # memory; BENCHMARKS.md).
    workers: int = setting(
        "SAGEMAKER_MODEL_SERVER_WORKERS",
        1,
        "gunicorn worker processes, each loading the model (MMS: workers per model; measured in `BENCHMARKS.md`)",
        bounds=(1, 64),
        derive=lambda r: max(1, math.floor(r["cpu_limit"] / 4)),
        default_doc="one per 4 CPUs, at least 1",
    )
    max_payload_mb: int = setting(
        "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, "body limit in MB, enforced by nginx (413)", bounds=(1, 100)
    )
    batch_strategy: str = setting(
        "SAGEMAKER_BATCH_STRATEGY",
        "MULTI_RECORD",
        "a Batch Transform hint, reported by `/execution-parameters`",
        choices=("MULTI_RECORD", "SINGLE_RECORD"),
    )
    max_concurrent_transforms: int = setting(
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS",
        1,
        "a Batch Transform hint, reported by `/execution-parameters` (with a `MaxPayloadInMB` that fits the budget)",
        bounds=(1, 1024),
        derive=lambda r: r["workers"],
        default_doc="the number of workers",
    )
    multi_model: bool = setting(
        "SAGEMAKER_MULTI_MODEL",
        False,
        "`true`: a multi-model endpoint, served by Multi Model Server (serving/mms_service.py)",
    )
    # The toolkit's default turns container support off (-XX:-UseContainerSupport), sizing the heap
    # from the host's memory.
    mms_jvm_options: str = setting(
        "SAGEMAKER_MODEL_SERVER_VMARGS",
        MMS_JVM_OPTIONS,
        "multi-model mode: options of MMS's JVM (the front end only: models run in Python workers)",
        allowed_doc="any JVM options",
    )
    log_level: int = setting(
        "SAGEMAKER_CONTAINER_LOG_LEVEL",
        logging.INFO,
        "log level, a number or a name",
        parse=_log_level,
        default_doc="`INFO`",
        allowed_doc="a non-negative number, or `DEBUG`, `INFO`, `WARNING`/`WARN`, `ERROR`, `CRITICAL` (any case)",
    )
    log_format: str = setting(
        "QA_LOG_FORMAT",
        "text",
        "`json`: every log line a JSON object (app, gunicorn, nginx's access log but not its own "
        "error lines; on multi-model "
        "endpoints MMS, its workers and what its JVM prints), for CloudWatch Logs Insights",
        choices=("text", "json"),
    )
    cloudwatch_emf_namespace: str | None = setting(
        "QA_CLOUDWATCH_EMF_NAMESPACE",
        None,
        "a CloudWatch namespace: one embedded-metric-format line per request on stdout (Latency, "
        "QueueTime, ForwardTime in ms, Windows, Errors; dimension Status), metrics with no agent",
        default_doc="off",
        allowed_doc="a namespace",
    )
    hf_model_id: str | None = setting(
        "HF_MODEL_ID",
        None,
        "a Hub model id, downloaded at start-up when `/opt/ml/model` holds no model",
        allowed_doc="a Hub model id",
    )
    hf_model_revision: str | None = setting(
        "HF_MODEL_REVISION",
        None,
        "the revision of `HF_MODEL_ID` to download",
        default_doc="`main`",
        allowed_doc="a branch, tag or commit",
    )
    hf_token: str | None = setting(
        "HF_TOKEN",
        None,
        "a Hub token for `HF_MODEL_ID`; shown as `***` in the log",
        also_read="HF_API_TOKEN",
        allowed_doc="a Hub token",
    )
    hf_task: str | None = setting(
        "HF_TASK",
        None,
        "the pipeline task: this image serves only question answering",
        choices=("question-answering",),
    )
    bind_host: str = setting(
        "QA_BIND_HOST", "0.0.0.0", "the address nginx listens on", allowed_doc="an address"
    )
    model_dir: Path = setting(
        "QA_MODEL_DIR",
        Path("/opt/ml/model"),
        "the model's directory (for running outside the image)",
        allowed_doc="a directory",
    )
    baked_model_dir: Path = setting(
        "QA_BAKED_MODEL_DIR",
        Path("/opt/program/model"),
        "the model `build.sh` baked in, served when neither `QA_MODEL_DIR` nor `HF_MODEL_ID` gives one",
        allowed_doc="a directory",
    )
    run_dir: Path = setting(
        "QA_RUN_DIR",
        Path("/tmp/qa-serving"),
        "where the stack keeps its sockets, nginx's config, downloads and readiness markers",
        allowed_doc="a writable directory",
    )
    requests_per_worker: int = setting(
        "QA_REQUESTS_PER_WORKER",
        16,
        "requests each worker serves at once (their windows share forward passes); the next ones "
        "wait in one queue, in arrival order",
        bounds=(1, 256),
        renamed_from="QA_THREADS_PER_WORKER",
    )
    # Past those being served; nginx answers the rest 503 at once (waiting_requests).
    max_waiting_requests: int | None = setting(
        "QA_MAX_WAITING_REQUESTS",
        None,
        "requests allowed to wait for a worker; the next is refused by nginx, 503 with "
        '`Retry-After: 1`, before its body is read (the README\'s "Overload")',
        bounds=(0, MAX_WAITING_REQUESTS),
        default_doc="what the instance answers within the budget (2 AVX-512 CPUs, 60 s: fp32 521, int8 1,935)",
    )
    preload: bool = setting(
        "QA_PRELOAD",
        False,
        "gunicorn `preload_app`: load the model once in gunicorn's master, before forking",
    )
    install_user_requirements: bool = setting(
        "QA_INSTALL_USER_REQUIREMENTS",
        True,
        "pip-install `/opt/ml/model/code/requirements.txt` at start-up (multi-model: each model's "
        "`code/requirements.txt` as it loads)",
    )
    user_program: str = setting(
        "SAGEMAKER_PROGRAM",
        "inference.py",
        "the user's entry point in `/opt/ml/model/code`, `.py` may be left out (the SageMaker SDK sets it "
        "for an `entry_point` of another name)",
        parse=_program,
        allowed_doc="a file name in `code/`, `.py` optional",
    )
    worker_user: str = setting(
        "QA_WORKER_USER",
        "qa",
        "who nginx's and gunicorn's workers (the processes that parse requests) run as when the "
        "container starts as root; they stay root, with a warning naming the file, when that user "
        "cannot read the model; `root` keeps root",
        allowed_doc="a user name",
    )
    shutdown_timeout_s: int = setting(
        "QA_SHUTDOWN_TIMEOUT_S",
        25,
        "SIGTERM drain budget in seconds (SageMaker kills at 30 s)",
        bounds=(1, 3600),
    )
    graph_cache_dir: Path | None = setting(
        "QA_GRAPH_CACHE_DIR",
        None,
        "where graphs made at start-up are kept (a model's own `graphs/` is looked at first)",
        default_doc="`<QA_RUN_DIR>/graphs`",
        allowed_doc="a directory",
    )
    model_memory_report_s: int = setting(
        "QA_MODEL_MEMORY_REPORT_S",
        60,
        "multi-model with `QA_CLOUDWATCH_EMF_NAMESPACE`: seconds between two EMF records of each loaded model's memory",
        bounds=(1, 3600),
    )
    request_metrics: bool = setting(
        "QA_REQUEST_METRICS",
        True,
        "`false` turns off the per-request log line, its metrics and EMF (only to measure what they cost)",
    )
    # Resolved at start-up, not read from a variable.
    cpu_limit: float = 1.0  # CPUs the container may use (container_cpu_limit)
    # Who the entrypoint decided the workers run as, from QA_WORKER_USER (serving/privileges.py);
    # None: the user of the process that started them.
    workers_run_as: str | None = None

    def __post_init__(self) -> None:
        if (problem := first_problem(self)) is not None:
            raise SettingsError(problem)
        try:
            self.qa  # noqa: B018 - built now, so that a bad combination fails here and not at model load
        except OptionsError as exc:
            raise SettingsError(str(exc)) from None

    @cached_property
    def qa(self) -> QAOptions:
        """The QA library's options (qa/options.py)."""
        return QAOptions(graph_cache=self.graph_cache, **{name: getattr(self, name) for name in _QA_FIELDS})

    @property
    def graph_cache(self) -> Path:
        """Where graphs made at start-up are kept (qa/graphs.py)."""
        return self.graph_cache_dir or self.run_dir / "graphs"

    @property
    def resolved_file(self) -> Path:
        """Where the entrypoint saves the settings it resolved, for the processes it starts."""
        return self.run_dir / "settings.json"

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
        """Every setting from the environment; unset or empty: its default."""
        resolved = _Resolver(env, container_cpu_limit() if cpu_limit is None else cpu_limit)
        return cls(**{f.name: resolved[f.name] for f in dataclasses.fields(cls)})

    @classmethod
    def load(cls, env: Mapping[str, str]) -> Settings:
        """The entrypoint's resolved settings (RESOLVED_SETTINGS), else from the environment."""
        path = env.get(RESOLVED_SETTINGS)
        if not path:
            return cls.from_env(env)
        values = json.loads(Path(path).read_text())
        return cls(**{k: Path(v) if v is not None and _kind(k) is Path else v for k, v in values.items()})

    def save(self) -> Path:
        """Write these settings into the run dir, for `load`; owner-only (the token is in them)."""
        values = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        path = self.resolved_file
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(values, sort_keys=True))
        return path

    def to_log_dict(self) -> dict:
        """The resolved settings for the start-up log line, with the token hidden."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}
        if out["hf_token"]:
            out["hf_token"] = "***"
        return out


SETTINGS = settings_of(Settings)  # field -> its Setting: the one table
_HINTS = get_type_hints(Settings)
_QA_FIELDS = tuple(settings_of(QAOptions))


class _Resolver(dict):
    """Field -> value from the environment, each resolved on first use: a derived default reads
    the settings it depends on through the same mapping, whatever their order."""

    def __init__(self, env: Mapping[str, str], cpu_limit: float):
        super().__init__(cpu_limit=cpu_limit, workers_run_as=None)
        self.env = env

    def __missing__(self, name: str) -> Any:
        spec, kind = SETTINGS[name], _kind(name)
        raw = self.env.get(spec.var)
        if raw is None and spec.renamed_from and spec.renamed_from in self.env:
            log.warning("%s is renamed %s: set that instead", spec.renamed_from, spec.var)
            spec = dataclasses.replace(spec, var=spec.renamed_from)  # messages name what was set
            raw = self.env[spec.var]
        if not (raw or "").strip() and spec.also_read:
            raw = self.env.get(spec.also_read)
        raw = None if raw is None else raw.strip()
        if raw is not None and (raw or kind is bool):  # empty is the default, but for booleans: false
            value = _parse(spec, raw, kind)
        else:
            value = spec.derive(self) if spec.derive else Settings.__dataclass_fields__[name].default
        if (problem := spec.problem(value)) is not None:
            raise SettingsError(problem)
        self[name] = value
        return value


def _kind(name: str) -> type:
    """The field's type, without its None."""
    hint = _HINTS[name]
    return next((a for a in get_args(hint) if a is not type(None)), hint)


def _parse(spec: Setting, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise SettingsError(f"{spec.var}={raw!r} is not a boolean: use true or false")
    try:
        if spec.parse:
            return spec.parse(raw)
        if kind is int:
            return int(raw)
    except ValueError as exc:
        reason = str(exc) if spec.parse else "is not an integer"
        raise SettingsError(f"{spec.var}={raw!r} {reason}") from None
    return Path(raw) if kind is Path else raw


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
    in_service = settings.workers * settings.requests_per_worker
    room = max(0, MAX_WAITING_REQUESTS - in_service)
    if settings.max_waiting_requests is not None:
        return min(settings.max_waiting_requests, room)
    per_second = settings.cpu_limit / CPU_S_PER_RECORD[cpu_class][settings.precision]
    return min(math.floor(settings.request_timeout_s * per_second), room)


def admitted_requests(settings: Settings, cpu_class: str) -> int:
    """POST /invocations requests nginx lets in at once: those the workers serve and those waiting."""
    return settings.workers * settings.requests_per_worker + waiting_requests(settings, cpu_class)
