#!/usr/bin/env python3
"""The image's ENTRYPOINT (and the way to run the stack on a developer machine).

    entrypoint.py serve    build the settings, resolve the model, check the inference code,
                           render nginx's config, then run nginx + gunicorn under the supervisor;
                           with SAGEMAKER_MULTI_MODEL=true, run Multi Model Server instead
    entrypoint.py train    fails: this image only serves
    entrypoint.py precision-report [SAMPLES.jsonl] [--json FILE]
                           what int8 and bf16 cost on the model against fp32 (code/qa_report.py)
    entrypoint.py CMD ...  runs CMD (handy for debugging a container)

This file's directory is the app root (/opt/program in the image): `code/` holds the built-in
handler, `docker/` the nginx template and gunicorn config, `serving/` the runtime.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(APP_ROOT))

from serving import logs, nginx  # noqa: E402
from serving.handler import HandlerError, install_user_requirements  # noqa: E402
from serving.model_source import ModelSourceError, resolve_model  # noqa: E402
from serving.settings import Settings, SettingsError  # noqa: E402
from serving.supervisor import ChildSpec, Supervisor  # noqa: E402

log = logging.getLogger("entrypoint")

EXIT_STARTUP_ERROR = 1
EXIT_CONFIG_ERROR = 2
EXIT_NGINX_DIED = 3
EXIT_GUNICORN_DIED = 4
EXIT_MODEL_SERVER_DIED = 5
GUNICORN_CONF = APP_ROOT / "docker" / "gunicorn_conf.py"


def _prepare_run_dir(settings: Settings) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # Leftovers of an earlier run in the same dir: readiness markers and the old socket.
    shutil.rmtree(settings.run_dir / "ready", ignore_errors=True)
    nginx.socket_path(settings).unlink(missing_ok=True)


def _check_handler() -> None:
    """Import and compose the hooks in a child process: fails fast on a bad inference.py without
    loading torch into this long-lived supervisor."""
    result = subprocess.run([sys.executable, "-m", "serving.handler", "check"], cwd=APP_ROOT, check=False)
    if result.returncode != 0:
        raise HandlerError("the inference code failed its start-up check (see the error above)")


def _exit_on_signal(signum: int, frame: object) -> None:
    log.warning("received %s during start-up: exiting", signal.Signals(signum).name)
    sys.exit(128 + signum)


def serve(env: dict[str, str]) -> int:
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    logs.configure(settings.log_level)
    # As PID 1 the kernel ignores signals without a handler: let `docker stop` end a long model
    # download or the handler check at once (the supervisor installs its draining handlers later).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    log.info("starting: %s", json.dumps(settings.to_log_dict(), sort_keys=True))
    if settings.multi_model:
        return serve_multi_model(settings)
    try:
        _prepare_run_dir(settings)
        model_dir = resolve_model(settings, download=True)
        install_user_requirements(settings)
        _check_handler()
        if not Path(nginx.NGINX_BINARY).exists():
            raise FileNotFoundError(
                f"nginx not found at {nginx.NGINX_BINARY}: install it (Debian: apt-get install nginx)"
            )
        conf = nginx.write_config(settings)
    except (ModelSourceError, HandlerError, OSError) as exc:
        log.error("start-up failed: %s", exc)
        return EXIT_STARTUP_ERROR
    log.info("model %s; nginx config %s", model_dir, conf)
    socket = nginx.socket_path(settings)
    supervisor = Supervisor(
        [
            ChildSpec(
                "gunicorn",
                [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)],
                signal.SIGTERM,
                EXIT_GUNICORN_DIED,
                cwd=APP_ROOT,
                ready=socket.exists,
            ),
            ChildSpec("nginx", nginx.command(settings), signal.SIGQUIT, EXIT_NGINX_DIED),
        ],
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
    return supervisor.run()


def serve_multi_model(settings: Settings) -> int:
    """Multi-model endpoint: Multi Model Server, started the SageMaker Inference Toolkit's way.

    SageMaker loads and unloads models at run time (`POST /models` with a directory under
    /opt/ml/models); MMS starts a worker per model running serving/mms_service.py. MMS reads the
    port, the timeout, the workers per model and the JVM's options from the environment, so ours
    are written there. Exits 0 after SIGTERM, else non-zero: an MMS that dies on its own (its JVM
    out of memory, say) must take the container down with it, so that SageMaker replaces it.
    """
    if shutil.which("java") is None:
        log.error("start-up failed: Multi Model Server needs a Java runtime (java not on PATH)")
        return EXIT_STARTUP_ERROR
    os.environ.update(
        SAGEMAKER_MULTI_MODEL="true",
        SAGEMAKER_BIND_TO_PORT=str(settings.port),
        SAGEMAKER_MODEL_SERVER_WORKERS=str(settings.workers),
        SAGEMAKER_MODEL_SERVER_TIMEOUT=str(settings.request_timeout_s),
        SAGEMAKER_MODEL_SERVER_VMARGS=settings.mms_jvm_options,
        PYTHONPATH=os.pathsep.join(filter(None, [str(APP_ROOT), os.environ.get("PYTHONPATH")])),
    )
    with warnings.catch_warnings():  # "pkg_resources is deprecated": why setuptools is pinned
        warnings.simplefilter("ignore", UserWarning)
        from sagemaker_inference import model_server  # reads SAGEMAKER_MULTI_MODEL when imported

    # The toolkit replaces our SIGTERM handler with its own (which forwards the signal to MMS) and
    # returns nothing when MMS ends. A wakeup fd records every signal that arrives whoever handles
    # it: that tells a requested stop from a crash.
    signals_read, signals_write = os.pipe()
    os.set_blocking(signals_read, False)
    os.set_blocking(signals_write, False)
    signal.set_wakeup_fd(signals_write, warn_on_full_buffer=False)
    try:
        model_server.start_model_server(handler_service="serving.mms_service:handle")
    except Exception as exc:  # the toolkit raises a bare Exception when MMS never came up
        log.error("start-up failed: Multi Model Server did not start: %s", exc)
        return EXIT_STARTUP_ERROR
    finally:
        signal.set_wakeup_fd(-1)
        os.close(signals_write)
    if signal.SIGTERM in _signals_received(signals_read):
        log.info("Multi Model Server stopped after SIGTERM")
        return 0
    log.error("Multi Model Server exited without being asked to stop (its log is above)")
    return EXIT_MODEL_SERVER_DIED


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


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command == "serve":
        return serve(dict(os.environ))
    if command == "train":
        print(
            "error: this image only serves models (run it with `serve`); training is not supported",
            file=sys.stderr,
        )
        return EXIT_CONFIG_ERROR
    if command == "precision-report":
        report = APP_ROOT / "code" / "qa_report.py"
        os.execv(sys.executable, [sys.executable, str(report), *argv[1:]])
    os.execvp(argv[0], argv)
    return EXIT_STARTUP_ERROR  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
