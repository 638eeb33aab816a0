"""gunicorn's configuration: plain Python assigning only gunicorn's own names, from the Settings
the entrypoint resolved (serving/settings.py, `Settings.load`).

Loaded by `python -m gunicorn -c serving/gunicorn_conf.py` (started by serving/supervisor.py with
the app root as working directory). Raw reads, then derived values, then assignments.
"""

import json
import logging
import os
import sys

import gunicorn.http.wsgi
import gunicorn.util

from qa.cpu import cpu_class, cpu_flags
from serving.errors import raw_error_response
from serving.gunicorn_worker import CONTROL_THREADS
from serving.nginx import control_socket_path, work_socket_path
from serving.privileges import lookup
from serving.settings import Settings, admitted_requests

_settings = Settings.load(os.environ)

wsgi_app = "serving.app:create_app_from_env()"
# Inference on one socket, /ping and the rest on the other (serving/gunicorn_worker.py).
bind = [f"unix:{work_socket_path(_settings)}", f"unix:{control_socket_path(_settings)}"]
umask = 0o077
worker_class = "serving.gunicorn_worker.AdmittingWorker"
workers = _settings.workers
# One thread per request a worker serves at once, plus the control routes' own.
threads = _settings.requests_per_worker + CONTROL_THREADS
# The waiting requests wait in the work socket's queue. Room for all nginx admits: a worker may
# not have taken the next request yet when nginx lets the one after it in.
backlog = admitted_requests(_settings, cpu_class(cpu_flags()))
# gthread workers heartbeat from their main loop, so this only catches a hung worker process.
timeout = 30
# The supervisor drains nginx first (up to shutdown_timeout_s - gunicorn_stop_s); gunicorn then only has idle
# workers or abandoned timed-out work left, and the whole stop fits SageMaker's 30 s SIGKILL window.
graceful_timeout = _settings.gunicorn_stop_s
keepalive = 2
preload_app = _settings.preload
# nginx writes the access log; gunicorn logs errors to stderr.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level_name
proc_name = "qa-serving"
# The workers parse request bytes: they run as the user the entrypoint chose (serving/privileges.py),
# with that user's groups only, not root's.
_worker = lookup(_settings.workers_run_as or "")
if _worker is not None:
    user = _worker.uid
    group = _worker.gid
    initgroups = True
# gunicorn's own lines in the stack's one log shape, text or JSON (they carry no request id).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "qa": {
            "()": "serving.logs.JsonFormatter"
            if _settings.log_format == "json"
            else "serving.logs.TextFormatter"
        }
    },
    "handlers": {
        "error_console": {"class": "logging.StreamHandler", "formatter": "qa", "stream": "ext://sys.stderr"}
    },
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error_console"], "propagate": False}
    },
    "root": {"level": loglevel.upper(), "handlers": []},
}
# gunicorn's runtime control socket lives in $HOME by default (read-only in the image); not needed.
control_socket_disable = True


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it cannot parse, in the error table's JSON shape (its own is
    an HTML page that quotes the request back)."""
    gunicorn.util.write_nonblock(sock, raw_error_response(status_int))


# No setting chooses that page: gunicorn's workers call util.write_error, replaced here in the
# master before they fork. The HTTP abuse tests fail if a gunicorn release stops calling it.
gunicorn.util.write_error = _write_json_error


class _Gathered:
    """Stands in for the socket while gunicorn writes: keeps what it sends."""

    def __init__(self):
        self.parts = []

    def sendall(self, data):
        self.parts.append(bytes(data))


_write_response = gunicorn.http.wsgi.Response.write


def _write_head_with_body(response, data):
    """The first write of a response sends its headers and its first body bytes in one sendall.
    gunicorn sends them in two: a worker killed between them left nginx a 200 status already
    passed on to the client, and a body that never came. Now a kill leaves nginx nothing (its
    JSON 502) or the whole answer (bodies here are far smaller than the socket's buffer)."""
    if response.headers_sent:
        return _write_response(response, data)
    sock, gathered = response.sock, _Gathered()
    response.sock = gathered
    try:
        return _write_response(response, data)
    finally:
        response.sock = sock
        if gathered.parts:  # the same bytes gunicorn wrote, even when it raised after the headers
            sock.sendall(b"".join(gathered.parts))


# gunicorn has no setting for it either; patched in the master, before the workers fork.
# tests/faults/test_faults.py kills a worker between the two writes.
gunicorn.http.wsgi.Response.write = _write_head_with_body


def when_ready(server):
    server.log.info(
        "gunicorn: %s",
        json.dumps(
            {
                "workers": workers,
                "threads": threads,
                "timeout_s": timeout,
                "graceful_timeout_s": graceful_timeout,
                "preload_app": preload_app,
                "bind": bind,
                "backlog": backlog,
            },
            sort_keys=True,
        ),
    )


def post_worker_init(worker):
    # Start loading the model in a background thread of this worker: /ping answers 503 meanwhile.
    worker.wsgi.start()


def child_exit(server, worker):
    # A dead worker's live gauges (memory, load time) leave the sums /metrics serves.
    from serving import metrics

    metrics.worker_exited(worker.pid)


def worker_exit(server, worker):
    # Tearing down an interpreter with torch loaded costs seconds of CPU during a stop and there is
    # nothing left to flush: leave at once, with the exit status gunicorn was about to use.
    exiting = sys.exc_info()[1]
    code = exiting.code if isinstance(exiting, SystemExit) and isinstance(exiting.code, int) else 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
