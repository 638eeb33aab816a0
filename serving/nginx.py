"""Renders docker/nginx.conf.template into the run dir from the Settings object (and the error
table, serving/errors.py, for the errors nginx answers itself)."""

from __future__ import annotations

import grp
import logging
import os
import re
from pathlib import Path

from qa.cpu import cpu_class, cpu_flags
from serving.errors import nginx_error_pages, nginx_overloaded_pages
from serving.privileges import lookup
from serving.settings import Settings, admitted_requests, waiting_requests

TEMPLATE = Path(__file__).resolve().parent.parent / "docker" / "nginx.conf.template"
NGINX_BINARY = "/usr/sbin/nginx"
# nginx waits a little longer than the app's own budget, so the app's 504 with its message wins.
PROXY_TIMEOUT_MARGIN_S = 5
_NGINX_LOG_LEVELS = (
    (logging.DEBUG, "info"),
    (logging.INFO, "warn"),
    (logging.WARNING, "warn"),
    (logging.ERROR, "error"),
)


def work_socket_path(settings: Settings) -> Path:
    """Where gunicorn listens for POST /invocations: its queue is where waiting requests wait."""
    return settings.run_dir / "work.sock"


def control_socket_path(settings: Settings) -> Path:
    """Where gunicorn listens for everything else (/ping never waits behind inference)."""
    return settings.run_dir / "control.sock"


def socket_paths(settings: Settings) -> list[Path]:
    return [work_socket_path(settings), control_socket_path(settings)]


def config_path(settings: Settings) -> Path:
    return settings.run_dir / "nginx.conf"


def _error_log_level(level: int) -> str:
    for threshold, name in _NGINX_LOG_LEVELS:
        if level <= threshold:
            return name
    return "crit"


def _user_directive(worker_user: str) -> str:
    """nginx's `user`: only a root master switches its workers' user (to `nobody` unless told)."""
    if os.geteuid() != 0:
        return ""
    worker = lookup(worker_user)
    if worker is None:
        return "user root root;"
    return f"user {worker.name} {grp.getgrgid(worker.gid).gr_name};"


def render(settings: Settings, template: Path = TEMPLATE, worker_user: str = "root") -> str:
    waiting = waiting_requests(settings, cpu_class(cpu_flags()))
    admitted = admitted_requests(settings, cpu_class(cpu_flags()))
    values = {
        # The workers parse request bytes: the unprivileged user when there is one (privileges.py).
        "user_directive": _user_directive(worker_user),
        "run_dir": str(settings.run_dir),
        "error_log_level": _error_log_level(settings.log_level),
        "access_log_format": "qa_json" if settings.log_format == "json" else "qa",
        "work_socket": str(work_socket_path(settings)),
        "control_socket": str(control_socket_path(settings)),
        # Requests served or waiting, all workers: nginx answers 503 to the next (serving/gunicorn_worker.py).
        "admitted_requests": str(admitted),
        "bind_host": settings.bind_host,
        "port": str(settings.port),
        "max_body_mb": str(settings.max_payload_mb),
        "proxy_timeout_s": str(settings.request_timeout_s + PROXY_TIMEOUT_MARGIN_S),
        "error_pages": nginx_error_pages(
            settings.max_payload_mb, settings.request_timeout_s + PROXY_TIMEOUT_MARGIN_S, waiting
        ).replace("\n", "\n        "),
        "overloaded_pages": nginx_overloaded_pages().replace("\n", "\n            "),
    }

    def substitute(match: re.Match) -> str:
        return values[match.group(1)]

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", substitute, template.read_text())


def temp_dirs(settings: Settings) -> list[Path]:
    """Where nginx's workers buffer bodies: theirs to write."""
    return [settings.run_dir / "nginx" / sub for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]


def write_config(settings: Settings, worker_user: str = "root") -> Path:
    """Render the config and create nginx's temp dirs; returns the config's path."""
    for path in temp_dirs(settings):
        path.mkdir(parents=True, exist_ok=True)
    path = config_path(settings)
    path.write_text(render(settings, worker_user=worker_user))
    return path


def command(settings: Settings, binary: str = NGINX_BINARY) -> list[str]:
    # -e stderr: nginx opens its default error log before reading the config; avoid that path.
    return [binary, "-e", "stderr", "-p", str(settings.run_dir / "nginx"), "-c", str(config_path(settings))]
