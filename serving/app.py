"""The web app (Falcon, WSGI): routes, readiness, content negotiation, and THE error map.

Routes: GET /ping, POST /invocations, GET /execution-parameters. The app knows nothing of the
model: it passes the raw body, Content-Type and Accept to the handler and sends back what the
handler returns. Every error leaves through `_error_response`: a ServingError becomes its status
and `{"code", "type", "message"}`; anything else is a 500 whose traceback goes to the log only.

Per worker: the model loads in a background thread so /ping answers 503 at once while loading;
/ping is 200 only after the model loaded and a warm-up request passed in this worker (and, at
start-up, in every worker). Requests run on a small executor so a request over its time budget
gets a 504 while its work finishes in the background, still counted against the bounded in-flight
limit: overload is a fast 503 with Retry-After, never a queue that starves /ping.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import falcon

from serving import logs
from serving.errors import (
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    ServiceUnavailable,
    ServingError,
)
from serving.handler import CUSTOM_ATTRIBUTES, Context
from serving.settings import Settings

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-Id"
LOADING_RETRY_AFTER_S = 5
OVERLOAD_RETRY_AFTER_S = 1
# gunicorn's WORKER_BOOT_ERROR: the arbiter halts instead of respawning a worker that cannot boot.
WORKER_BOOT_ERROR = 3


class HandlerLike(Protocol):
    model_dir: Path

    def load_model(self) -> None: ...

    def warm_up(self) -> None: ...

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, context: Context
    ) -> tuple[bytes, str]: ...


def _fatal_exit() -> None:
    logging.shutdown()
    os._exit(WORKER_BOOT_ERROR)


class Readiness:
    """This worker's readiness, plus the start-up barrier across workers (marker files in run_dir)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.markers = settings.run_dir / "ready"
        self.ready = threading.Event()
        self._stack_up = False

    def mark_ready(self) -> None:
        self.markers.mkdir(parents=True, exist_ok=True)
        (self.markers / str(os.getpid())).touch()
        self.ready.set()

    def _live_ready_workers(self) -> int:
        count = 0
        for marker in self.markers.glob("[0-9]*"):
            try:
                os.kill(int(marker.name), 0)
            except (ProcessLookupError, ValueError):
                continue
            except PermissionError:
                pass
            count += 1
        return count

    def is_ready(self) -> bool:
        if not self.ready.is_set():
            return False
        # Before every worker is up, a ready worker still says 503 so no request lands on a loading
        # one; once the stack has been up, a respawned worker does not take the others down with it.
        if not self._stack_up:
            if (
                self._live_ready_workers() < self.settings.workers
                and not (self.markers / "stack-up").exists()
            ):
                return False
            (self.markers / "stack-up").touch()
            self._stack_up = True
        return True


class Runtime:
    """Per-worker state: the handler once loaded, readiness, the executor and the in-flight bound."""

    def __init__(
        self, settings: Settings, handler_factory: Callable[[], HandlerLike], on_fatal: Callable[[], None]
    ):
        self.settings = settings
        self.handler_factory = handler_factory
        self.on_fatal = on_fatal
        self.handler: HandlerLike | None = None
        self.readiness = Readiness(settings)
        self.max_in_flight = settings.threads_per_worker
        self._slots = threading.BoundedSemaphore(self.max_in_flight)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._started_in: int | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start loading in this process (idempotent; a fork needs its own thread and executor)."""
        with self._start_lock:
            if self._started_in == os.getpid():
                return
            self._started_in = os.getpid()
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.max_in_flight, thread_name_prefix="invoke"
            )
            threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        started = time.monotonic()
        try:
            handler = self.handler_factory()
            handler.load_model()
            loaded = time.monotonic()
            log.info("model loaded from %s in %.2f s", handler.model_dir, loaded - started)
            handler.warm_up()
            log.info("warm-up request passed in %.2f s; worker ready", time.monotonic() - loaded)
        except BaseException:  # noqa: BLE001 - anything, even SystemExit from user code, means no model
            log.critical("model failed to load; this worker cannot serve:\n%s", traceback.format_exc())
            self.on_fatal()
            return
        self.handler = handler
        self.readiness.mark_ready()

    def is_ready(self) -> bool:
        return self.handler is not None and self.readiness.is_ready()

    def invoke(
        self, body: bytes, content_type: str, accept: str | None, context: Context
    ) -> tuple[bytes, str]:
        handler = self.handler
        if handler is None or not self.readiness.ready.is_set() or self._executor is None:
            raise ServiceUnavailable(
                "the model is still loading: retry shortly", retry_after_s=LOADING_RETRY_AFTER_S
            )
        if not self._slots.acquire(blocking=False):
            raise ServiceUnavailable(
                f"this worker is at its limit of {self.max_in_flight} requests in flight: retry shortly",
                retry_after_s=OVERLOAD_RETRY_AFTER_S,
            )
        try:
            run = contextvars.copy_context().run
            future = self._executor.submit(run, handler.invoke, body, content_type, accept, context)
        except BaseException:
            self._slots.release()
            raise
        # The slot is freed when the work ends, not when the client is answered: timed-out work
        # still occupies the CPU, so it still counts against the bound.
        future.add_done_callback(lambda _: self._slots.release())
        remaining = (context.deadline or time.monotonic()) - time.monotonic()
        try:
            return future.result(timeout=max(remaining, 0.0))
        except concurrent.futures.TimeoutError:
            raise RequestTimeout(
                f"the request did not finish within its time budget of {self.settings.request_timeout_s} s "
                f"(SAGEMAKER_MODEL_SERVER_TIMEOUT): send less work per request or raise the budget"
            ) from None


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
        context = Context(
            settings=self.runtime.settings,
            model_dir=self.runtime.handler.model_dir
            if self.runtime.handler
            else self.runtime.settings.model_dir,
            request_id=logs.request_id_var.get(),
            custom_attributes=req.get_header(CUSTOM_ATTRIBUTES),
            deadline=req.context.started + self.runtime.settings.request_timeout_s,
        )
        body = req.bounded_stream.read()
        content_type = req.content_type or "application/json"
        accept = req.get_header("Accept") or None
        data, out_type = self.runtime.invoke(body, content_type, accept, context)
        resp.data = data
        resp.content_type = out_type


class _ExecutionParameters:
    def __init__(self, settings: Settings):
        self.body = json.dumps(
            {
                "MaxConcurrentTransforms": settings.max_concurrent_transforms,
                "BatchStrategy": settings.batch_strategy,
                "MaxPayloadInMB": settings.max_payload_mb,
            }
        ).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = "application/json"
        resp.data = self.body


class _RequestScope:
    """Request id into the log context; request id and custom attributes back to the client."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.monotonic()
        req.context.token = logs.request_id_var.set(req.get_header(REQUEST_ID))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        request_id = req.get_header(REQUEST_ID)
        if request_id:
            resp.set_header(REQUEST_ID, request_id)
        custom_attributes = req.get_header(CUSTOM_ATTRIBUTES)
        if custom_attributes is not None:
            resp.set_header(CUSTOM_ATTRIBUTES, custom_attributes)
        token = req.context.get("token")
        if token is not None:
            logs.request_id_var.reset(token)


def _error_response(resp: falcon.Response, error: ServingError) -> None:
    resp.status = error.status
    resp.content_type = "application/json"
    resp.data = json.dumps(error.to_body()).encode()
    for name, value in error.headers.items():
        resp.set_header(name, value)


def _from_falcon(ex: falcon.HTTPError) -> ServingError:
    """Falcon's own errors (unknown route, wrong method, bad headers) in the one error shape."""
    if isinstance(ex, falcon.HTTPNotFound):
        return NotFound("no such route: use GET /ping, POST /invocations or GET /execution-parameters")
    if isinstance(ex, falcon.HTTPMethodNotAllowed):
        allowed = ex.headers.get("Allow", "") if ex.headers else ""
        return MethodNotAllowed(
            f"method not allowed on this route; allowed: {allowed}", headers={"Allow": allowed}
        )
    error = ServingError(ex.description or ex.title)
    error.status = ex.status_code
    error.type = (ex.title or "Error").replace(" ", "")
    return error


def _handle_serving_error(req: falcon.Request, resp: falcon.Response, ex: ServingError, params: dict) -> None:
    log_fn = log.warning if ex.status >= 500 else log.info
    if req.path != "/ping":  # polled every few seconds while loading: not worth a line each
        log_fn("%s %s -> %d %s: %s", req.method, req.path, ex.status, ex.type, ex.message)
    _error_response(resp, ex)


def _handle_falcon_error(
    req: falcon.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict
) -> None:
    _handle_serving_error(req, resp, _from_falcon(ex), params)


def _handle_unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict) -> None:
    log.error(
        "%s %s -> 500: unexpected error\n%s", req.method, req.path, "".join(traceback.format_exception(ex))
    )
    request_id = logs.request_id_var.get()
    where = f" (request id {request_id})" if request_id else ""
    _error_response(
        resp, InternalError(f"internal error while serving the request{where}; details are in the server log")
    )


class ServingApp:
    """The WSGI callable gunicorn serves; `start()` begins loading the model in this process."""

    def __init__(self, settings: Settings, runtime: Runtime):
        self.settings = settings
        self.runtime = runtime
        app = falcon.App(middleware=[_RequestScope()])
        app.req_options.strip_url_path_trailing_slash = True
        app.add_route("/ping", _Ping(runtime))
        app.add_route("/invocations", _Invocations(runtime))
        app.add_route("/execution-parameters", _ExecutionParameters(settings))
        app.add_error_handler(Exception, _handle_unexpected)
        app.add_error_handler(falcon.HTTPError, _handle_falcon_error)
        app.add_error_handler(ServingError, _handle_serving_error)
        self.falcon_app = app

    def start(self) -> None:
        self.runtime.start()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        return self.falcon_app(environ, start_response)


def create_app(
    settings: Settings,
    handler_factory: Callable[[], HandlerLike],
    *,
    on_fatal: Callable[[], None] = _fatal_exit,
) -> ServingApp:
    return ServingApp(settings, Runtime(settings, handler_factory, on_fatal))


def create_app_from_env() -> ServingApp:
    """gunicorn's entry (`serving.app:create_app_from_env()`): the worker process's edge."""
    from serving.handler import Handler
    from serving.model_source import resolve_model

    settings = Settings.from_env(os.environ)
    logs.configure(settings.log_level)

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
