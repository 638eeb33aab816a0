"""The web app (Falcon, WSGI): the routes (docs/contract.md#routes) and their error handling.

Routes: GET /ping, POST /invocations, GET /execution-parameters. The app knows nothing of the
model: it passes the raw body, Content-Type and Accept to the worker's runtime (runtime.py:
loading, readiness, the in-flight bound, time budgets) and sends back what the handler returns.
Every error leaves through the error table (`serving.errors.as_serving_error`), which also says
whether it was expected: an unexpected one is a 500 whose traceback goes to the log only.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import falcon

from qa import accounting
from qa.accounting import RequestAccount
from qa.cpu import cpu_class, cpu_flags
from serving import logs, metrics
from serving.errors import (
    ROUTES,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    ServingError,
    as_serving_error,
)
from serving.handler import CUSTOM_ATTRIBUTES, Context
from serving.runtime import LOADING_RETRY_AFTER_S, HandlerLike, Runtime, fatal_exit
from serving.settings import Settings, batch_payload_mb

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-Id"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"  # SageMaker's own id of an invocation, when it sends one
REQUEST_START = "X-Request-Start"  # set by nginx (docker/nginx.conf.template), whatever the client sent
MAX_CREDIBLE_WAIT_S = 3600  # the longest budget: a header claiming more is not nginx's


class _Metrics:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = metrics.render()


class _Ping:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.runtime.start()
        if not self.runtime.is_ready():
            raise ServiceUnavailable("the model is still loading", retry_after_s=LOADING_RETRY_AFTER_S)
        resp.content_type = "application/json"
        resp.data = b'{"status":"ready"}'

    # Load balancers and uptime checks probe with HEAD: the same status, no body (Falcon drops it).
    on_head = on_get


class _Invocations:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.runtime.start()
        body = req.bounded_stream.read()
        content_type = req.content_type or "application/json"
        accept = req.get_header("Accept") or None
        # The work runs in a copy of this context (runtime.py): the hooks fill in this account.
        req.context.account = RequestAccount() if self.runtime.settings.request_metrics else None
        token = accounting.current.set(req.context.account)
        try:
            data, out_type = self.runtime.invoke(
                body,
                content_type,
                accept,
                arrived=req.context.started,
                request_id=logs.request_id_var.get(),
                custom_attributes=req.get_header(CUSTOM_ATTRIBUTES),
            )
        finally:
            accounting.current.reset(token)
        resp.data = data
        resp.content_type = out_type


class _ExecutionParameters:
    def __init__(self, settings: Settings):
        self.body = json.dumps(
            {
                "MaxConcurrentTransforms": settings.max_concurrent_transforms,
                "BatchStrategy": settings.batch_strategy,
                # A mini-batch that one worker answers well inside the invocation timeout.
                "MaxPayloadInMB": batch_payload_mb(settings, cpu_class(cpu_flags())),
            }
        ).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/json"
        resp.data = self.body


class _RequestScope:
    """Request id into the log context; request id and custom attributes back to the client; each
    invocation counted, timed and logged in one structured line (metrics.py)."""

    def __init__(self, settings: Settings):
        self.emf_namespace = settings.cloudwatch_emf_namespace
        self.request_metrics = settings.request_metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = arrived(req.get_header(REQUEST_START), time.time(), time.monotonic())
        req.context.token = logs.request_id_var.set(req.get_header(REQUEST_ID))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        request_id = req.get_header(REQUEST_ID)
        if request_id:
            resp.set_header(REQUEST_ID, request_id)
        if self.request_metrics and req.path == "/invocations" and req.method == "POST":
            metrics.request_served(
                req.context.get("account") or RequestAccount(),
                int(resp.status_code),
                time.monotonic() - req.context.started,
                request_id=request_id,
                inference_id=req.get_header(INFERENCE_ID),
                error=req.context.get("error"),
                emf=self.emf_namespace,
            )
        custom_attributes = req.get_header(CUSTOM_ATTRIBUTES)
        if custom_attributes is not None:
            resp.set_header(CUSTOM_ATTRIBUTES, custom_attributes)
        token = req.context.get("token")
        if token is not None:
            logs.request_id_var.reset(token)


def arrived(request_start: str | None, wall_now: float, now: float) -> float:
    """When the request arrived, on the monotonic clock: when nginx had read it (its X-Request-Start,
    "t=<epoch seconds>"), so that the time it waited for a worker counts against its budget; now
    without the header, or with a time nginx cannot have written (in the future, or longer ago than
    any budget)."""
    try:
        waited = wall_now - float((request_start or "").removeprefix("t="))
    except ValueError:
        return now
    return now - waited if 0.0 < waited <= MAX_CREDIBLE_WAIT_S else now


def _send_error(req: falcon.Request, resp: falcon.Response, error: BaseException) -> None:
    served, expected = as_serving_error(error, logs.request_id_var.get())
    status = served.status
    if not expected:
        log.error(
            "%s %s -> 500: unexpected error\n%s",
            req.method,
            req.path,
            "".join(traceback.format_exception(error)),
        )
    elif req.path == "/invocations" and req.context.get("account") is not None:
        req.context.error = served.message  # in the request's own line (metrics.py)
    elif req.path != "/ping":  # polled every few seconds while loading: not worth a line each
        (log.warning if status >= 500 else log.info)(
            "%s %s -> %d: %s", req.method, req.path, status, served.message
        )
    resp.status = status
    resp.content_type = "application/json"
    resp.data = served.body()
    for name, value in served.headers.items():
        resp.set_header(name, value)


def _from_falcon(ex: falcon.HTTPError) -> ServingError:
    """Falcon's own errors (unknown route, wrong method, bad headers) in the table's terms."""
    if isinstance(ex, falcon.HTTPNotFound):
        return NotFound(f"no such route: {ROUTES}")
    if isinstance(ex, falcon.HTTPBadRequest) and ex.description == "Invalid HTTP method":
        # A method HTTP does not define (BREW): RFC 9110 says 501, as nginx does for its own.
        error = ServingError("this server implements no such method: use GET, HEAD, POST or OPTIONS")
        error.status = 501
        return error
    if isinstance(ex, falcon.HTTPMethodNotAllowed):
        allowed = ex.headers.get("Allow", "") if ex.headers else ""
        return MethodNotAllowed(
            f"method not allowed on this route; allowed: {allowed}", headers={"Allow": allowed}
        )
    error = ServingError(ex.description or ex.title)
    error.status = ex.status_code
    return error


def _handle_error(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    _send_error(req, resp, _from_falcon(ex) if isinstance(ex, falcon.HTTPError) else ex)


class ServingApp:
    """The WSGI callable gunicorn serves; `start()` begins loading the model in this process."""

    def __init__(self, settings: Settings, runtime: Runtime):
        self.settings = settings
        self.runtime = runtime
        app = falcon.App(middleware=[_RequestScope(settings)])
        app.req_options.strip_url_path_trailing_slash = True
        app.add_route("/ping", _Ping(runtime))
        app.add_route("/invocations", _Invocations(runtime))
        app.add_route("/execution-parameters", _ExecutionParameters(settings))
        app.add_route("/metrics", _Metrics())
        app.add_error_handler(Exception, _handle_error)
        app.add_error_handler(falcon.HTTPError, _handle_error)  # else Falcon's own, more specific, wins
        self.falcon_app = app

    def start(self) -> None:
        self.runtime.start()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self.falcon_app(environ, start_response)


def create_app(
    settings: Settings,
    handler_factory: Callable[[], HandlerLike],
    *,
    on_fatal: Callable[[], None] = fatal_exit,
) -> ServingApp:
    return ServingApp(settings, Runtime(settings, handler_factory, on_fatal))


def create_app_from_env() -> ServingApp:
    """gunicorn's entry (`serving.app:create_app_from_env()`): the worker process's edge."""
    from serving.handler import Handler
    from serving.model_source import resolve_model

    settings = Settings.load(os.environ)
    logs.configure(settings.log_level, log_format=settings.log_format)

    def load_handler() -> Handler:
        return Handler.load(settings, resolve_model(settings, download=False))

    app = create_app(settings, load_handler)
    if settings.preload:
        # gunicorn's preload_app imports this in the master: load the model there (shared
        # copy-on-write after fork); each worker still runs its own warm-up.
        handler = load_handler()
        handler.load_model()
        app.runtime.handler_factory = lambda: _Preloaded(handler)
    return app


class _Preloaded:
    """Wraps a handler whose model is already loaded (preload mode)."""

    def __init__(self, handler: Any):
        self._handler = handler
        self.model_dir = handler.model_dir

    def load_model(self) -> None:
        pass

    def warm_up(self) -> None:
        self._handler.warm_up()

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, context: Context
    ) -> tuple[bytes, str]:
        return self._handler.invoke(body, content_type, accept, context)
