#!/usr/bin/env python3
"""The image's ENTRYPOINT (and the way to run the stack on a developer machine).

    entrypoint.py serve    build the settings, resolve the model, check the inference code,
                           render nginx's config, then run nginx + gunicorn under the supervisor;
                           with SAGEMAKER_MULTI_MODEL=true, run Multi Model Server instead
    entrypoint.py train    fails: this image only serves
    entrypoint.py precision-report [SAMPLES: request bodies as JSON Lines, or a labeled SQuAD file] [--json FILE]
                           what int8 and bf16 cost on the model against fp32 (qa/report.py)
Exit codes: serving/exit_codes.py.
    entrypoint.py CMD ...  runs CMD (handy for debugging a container)

This file's directory is the app root (/opt/program in the image): `qa/` is the QA library,
`code/` the built-in handler hooks, `serving/` the web and process layers, `docker/` nginx's
config template.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# Python puts this script's directory first on sys.path: `qa` and `serving` import from here.
from serving import exit_codes, logs, nginx
from serving.handler import HandlerError, install_user_requirements
from serving.mms_launch import serve_multi_model
from serving.model_source import ModelSourceError, resolve_model
from serving.privileges import hand_over, worker_identity
from serving.settings import RESOLVED_SETTINGS, Settings, SettingsError
from serving.supervisor import ChildSpec, Supervisor

APP_ROOT = Path(__file__).resolve().parent

log = logging.getLogger("entrypoint")

GUNICORN_CONF = APP_ROOT / "serving" / "gunicorn_conf.py"


def _prepare_run_dir(settings: Settings) -> None:
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    # Leftovers of an earlier run in the same dir: readiness markers, metrics, the old sockets.
    shutil.rmtree(settings.run_dir / "ready", ignore_errors=True)
    shutil.rmtree(settings.run_dir / "metrics", ignore_errors=True)
    for socket in nginx.socket_paths(settings):
        socket.unlink(missing_ok=True)


def _choose_worker_user(settings: Settings, model_dir: Path) -> Settings:
    """Decide who the request-handling processes run as (serving/privileges.py), give them the
    directories they write and the settings to read, and return the settings with the decision."""
    identity = None
    for root in dict.fromkeys([model_dir, settings.model_dir / "code"]):
        if root.exists():
            identity = worker_identity(settings.worker_user, root)
            if identity is None:
                break
    home = settings.run_dir / "home"  # HOME for the workers: their own, writable under --read-only
    metrics = settings.run_dir / "metrics"  # prometheus_client's multiprocess files (serving/metrics.py)
    hand_over(
        [settings.run_dir / "ready", settings.graph_cache, home, metrics, *nginx.temp_dirs(settings)],
        identity,
    )
    log.info("request-handling processes run as %s", identity.name if identity else "this process's user")
    settings = dataclasses.replace(settings, workers_run_as=identity.name if identity else None)
    saved = settings.save()
    if identity is not None:
        os.chown(saved, identity.uid, identity.gid)
    return settings


def _gunicorn_env(settings: Settings) -> dict[str, str]:
    """gunicorn's environment: ours, with the resolved settings, and a HOME and metrics directory
    its workers may write (prometheus_client's multiprocess files: serving/metrics.py)."""
    return {
        **os.environ,
        RESOLVED_SETTINGS: str(settings.resolved_file),
        "HOME": str(settings.run_dir / "home"),
        "PROMETHEUS_MULTIPROC_DIR": str(settings.run_dir / "metrics"),
    }


def _check_handler(settings: Settings) -> None:
    """Import and compose the hooks in a child process: fails fast on a bad inference.py without
    loading torch into this long-lived supervisor."""
    result = subprocess.run(
        [sys.executable, "-m", "serving.handler", "check"],
        cwd=APP_ROOT,
        env={**os.environ, RESOLVED_SETTINGS: str(settings.resolved_file)},
        check=False,
    )
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
        return exit_codes.CONFIG_ERROR
    logs.configure(settings.log_level, log_format=settings.log_format)
    # As PID 1 the kernel ignores signals without a handler: let `docker stop` end a long model
    # download or the handler check at once (the supervisor installs its draining handlers later).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    log.info("settings: %s", json.dumps(settings.to_log_dict(), sort_keys=True))
    if settings.multi_model:
        return serve_multi_model(settings)
    try:
        _prepare_run_dir(settings)
        phases = {}
        began = time.monotonic()
        model_dir = resolve_model(settings, download=True)
        phases["model_s"], began = time.monotonic() - began, time.monotonic()
        install_user_requirements(settings)
        phases["requirements_s"], began = time.monotonic() - began, time.monotonic()
        settings = _choose_worker_user(settings, model_dir)
        _check_handler(settings)
        phases["hook_check_s"] = time.monotonic() - began
        log.info(
            "start-up: model found in %.2f s, its requirements in %.2f s, the hooks checked in %.2f s",
            *phases.values(),
            extra={"fields": {k: round(v, 3) for k, v in phases.items()}},
        )
        if not Path(nginx.NGINX_BINARY).exists():
            raise FileNotFoundError(
                f"nginx not found at {nginx.NGINX_BINARY}: install it (Debian: apt-get install nginx)"
            )
        conf = nginx.write_config(settings, worker_user=settings.workers_run_as or "root")
    except (ModelSourceError, HandlerError, OSError) as exc:
        log.error("start-up failed: %s", exc)
        return exit_codes.STARTUP_ERROR
    log.info("model %s; nginx config %s", model_dir, conf)
    sockets = nginx.socket_paths(settings)
    supervisor = Supervisor(
        [
            ChildSpec(
                "gunicorn",
                [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)],
                signal.SIGTERM,
                exit_codes.GUNICORN_DIED,
                cwd=APP_ROOT,
                env=_gunicorn_env(settings),
                ready=lambda: all(socket.exists() for socket in sockets),
            ),
            ChildSpec("nginx", nginx.command(settings), signal.SIGQUIT, exit_codes.NGINX_DIED),
        ],
        shutdown_timeout_s=settings.shutdown_timeout_s,
        reserve_per_child_s=settings.gunicorn_stop_s,
    )
    return supervisor.run()


def precision_report(argv: list[str], env: dict[str, str]) -> int:
    """What int8 and bf16 cost on the model against fp32 (qa/report.py), with the QA_* settings."""
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"error: invalid configuration: {exc}", file=sys.stderr)
        return exit_codes.CONFIG_ERROR
    from qa import report

    return report.main(
        argv, settings.qa, settings.model_dir, cache_named=settings.graph_cache_dir is not None
    )


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command == "serve":
        return serve(dict(os.environ))
    if command == "train":
        print(
            "error: this image only serves models (run it with `serve`); training is not supported",
            file=sys.stderr,
        )
        return exit_codes.CONFIG_ERROR
    if command == "precision-report":
        return precision_report(argv[1:], dict(os.environ))
    os.execvp(argv[0], argv)
    return exit_codes.STARTUP_ERROR  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
