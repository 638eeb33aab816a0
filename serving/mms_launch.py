"""Multi-model endpoints, the launching side: start Multi Model Server the SageMaker Inference
Toolkit's way and turn how it ended into the container's exit code. The service MMS runs for
each model is mms_service.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from qa.cpu import cpu_class, cpu_flags
from serving import exit_codes, logs
from serving.mms_unregister import LAUNCHER_PID
from serving.model_memory import ModelMemoryReporter
from serving.settings import RESOLVED_SETTINGS, Settings, waiting_requests

log = logging.getLogger(__name__)

APP_ROOT = Path(__file__).resolve().parent.parent
MMS_JSON_LOG_CONFIG = APP_ROOT / "docker" / "mms-log4j2-json.xml"


def serve_multi_model(settings: Settings) -> int:
    """Multi-model endpoint: Multi Model Server, started the SageMaker Inference Toolkit's way.

    SageMaker loads and unloads models at run time (`POST /models` with a directory under
    /opt/ml/models); MMS starts a worker per model running serving/mms_service.py. MMS reads the
    port, the timeout, the workers per model and the JVM's options from the environment, so ours
    are written there; its workers read the rest from our resolved settings (RESOLVED_SETTINGS).
    Exits 0 after SIGTERM, else non-zero: an MMS that dies on its own (its JVM
    out of memory, say) must take the container down with it, so that SageMaker replaces it.
    """
    if shutil.which("java") is None:
        log.error("start-up failed: Multi Model Server needs a Java runtime (java not on PATH)")
        return exit_codes.STARTUP_ERROR
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {RESOLVED_SETTINGS: str(settings.save())},
        SAGEMAKER_MULTI_MODEL="true",
        SAGEMAKER_BIND_TO_PORT=str(settings.port),
        SAGEMAKER_MODEL_SERVER_WORKERS=str(settings.workers),
        SAGEMAKER_MODEL_SERVER_TIMEOUT=str(settings.request_timeout_s),
        SAGEMAKER_MODEL_SERVER_VMARGS=settings.mms_jvm_options,
        # Requests each model's queue holds (the toolkit's config lets MMS read MMS_* variables):
        # the rule nginx follows in single-model mode, what can finish within the budget.
        MMS_JOB_QUEUE_SIZE=str(max(1, waiting_requests(settings, cpu_class(cpu_flags())))),
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(APP_ROOT), os.environ.get("PYTHONPATH")])
        ),  # for its workers
    )
    os.environ[LAUNCHER_PID] = str(os.getpid())  # its stdout is the container's log
    with warnings.catch_warnings():  # "pkg_resources is deprecated": why setuptools is pinned
        warnings.simplefilter("ignore", UserWarning)
        from sagemaker_inference import model_server  # reads SAGEMAKER_MULTI_MODEL when imported

    # The toolkit gives its logger a text handler of its own: its lines go to ours (the root's) only.
    for handler in list(logging.getLogger("sagemaker-inference").handlers):
        logging.getLogger("sagemaker-inference").removeHandler(handler)
    if settings.log_format == "json":  # MMS's own lines as JSON too (its workers' already are)
        model_server.DEFAULT_MMS_LOG_FILE = str(MMS_JSON_LOG_CONFIG)

    # The toolkit replaces our SIGTERM handler with its own (which forwards the signal to MMS) and
    # returns nothing when MMS ends. A wakeup fd records every signal that arrives whoever handles
    # it: that tells a requested stop from a crash.
    signals_read, signals_write = os.pipe()
    os.set_blocking(signals_read, False)
    os.set_blocking(signals_write, False)
    signal.set_wakeup_fd(signals_write, warn_on_full_buffer=False)
    if settings.cloudwatch_emf_namespace:
        ModelMemoryReporter(settings.cloudwatch_emf_namespace, settings.model_memory_report_s).start()
    relay = _output_as_json_lines() if settings.log_format == "json" else contextlib.nullcontext()
    try:
        with relay:
            model_server.start_model_server(handler_service="serving.mms_service:handle")
    except Exception as exc:  # the toolkit raises a bare Exception when MMS never came up
        log.error("start-up failed: Multi Model Server did not start: %s", exc)
        return exit_codes.STARTUP_ERROR
    finally:
        signal.set_wakeup_fd(-1)
        os.close(signals_write)
    if signal.SIGTERM in _signals_received(signals_read):
        log.info("Multi Model Server stopped after SIGTERM")
        return exit_codes.OK
    log.error("Multi Model Server exited without being asked to stop (its log is above)")
    return exit_codes.MODEL_SERVER_DIED


@contextlib.contextmanager
def _output_as_json_lines() -> Iterator[None]:
    """MMS's command-line tool and its JVM print a few lines of their own (start-up notices, the
    JVM's warnings) on the stdout and stderr they inherit from this process, outside MMS's log
    configuration. While MMS runs, both go through pipes that put every line in the JSON shape
    (serving/logs.py), stderr's as warnings."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    relays = []
    for fd, level in ((1, logging.INFO), (2, logging.WARNING)):
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, fd)
        os.close(write_fd)
        source, sink = os.fdopen(read_fd, "rb"), os.fdopen(os.dup(saved[fd]), "wb", buffering=0)
        relay = threading.Thread(
            target=logs.relay_as_json_lines,
            args=(source, sink, "multi-model-server", level),
            name=f"json-lines-{fd}",
            daemon=True,
        )
        relay.start()
        relays.append((relay, sink))
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)  # the pipes' last writers here are gone: the relays drain them
            os.close(original)
        for relay, sink in relays:
            relay.join(timeout=2)  # an orphaned MMS worker may hold a pipe open
            sink.close()


def _signals_received(fd: int) -> set[int]:
    received = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        received += chunk
    os.close(fd)
    return set(received)
