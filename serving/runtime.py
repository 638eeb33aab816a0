"""Per-worker runtime state: the handler once loaded, readiness, and the time budget. The routes
(app.py) ask it; it knows nothing of HTTP beyond the errors it raises.

The model loads in a background thread so /ping answers 503 at once while loading; /ping is 200
only after the model loaded and a warm-up request passed in this worker (and, at start-up, in
every worker). How many requests a worker takes at once is gunicorn_worker.py's; how many wait,
nginx's.

The time budget (SAGEMAKER_MODEL_SERVER_TIMEOUT) is owned here: a request's deadline is counted
from when nginx had read it (the X-Request-Start header, app.py), set once in its `Context`, and
this module alone decides the answer when it is spent. Before any work: a request whose budget ran
out while it waited, or has less left than requests take here lately, is dropped with a 503, never
computed only to time out. During the work: the request runs on an executor of
`requests_per_worker` threads and the request thread answers 504 at the deadline, whatever the
handler is doing (a user's hook cannot be interrupted; its thread stays taken until it returns, so
the requests behind it wait and are dropped at their own deadlines without running). The batcher
gives up at the same deadline (qa/batcher.py: the request's windows leave its queue, the executor
thread is freed); its DeadlineExceeded is answered as the same 504. nginx's proxy_read_timeout
(serving/nginx.py) is a few seconds longer: a safety net for a worker that cannot answer at all.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from qa.errors import DeadlineExceeded
from serving import metrics
from serving.errors import GatewayTimeout, ServiceUnavailable
from serving.handler import Context
from serving.settings import Settings

log = logging.getLogger(__name__)

LOADING_RETRY_AFTER_S = 5
OVERLOAD_RETRY_AFTER_S = 1
# How fast the typical service time follows the latest requests (an exponential moving average).
SERVICE_EWMA_WEIGHT = 0.1
# A request needs this much more than the typical time to finish surely: service times spread (at
# c=16 on the full-size stand-in, p99 1.8x p50), and one that times out was computed for nothing.
SERVICE_MARGIN = 1.5
# gunicorn's WORKER_BOOT_ERROR: the arbiter halts instead of respawning a worker that cannot boot.
WORKER_BOOT_ERROR = 3


class HandlerLike(Protocol):
    model_dir: Path

    def load_model(self) -> None: ...

    def warm_up(self) -> None: ...

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, context: Context
    ) -> tuple[bytes, str]: ...


def fatal_exit() -> None:
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
    """Per-worker state: the handler once loaded, readiness and the time budget."""

    def __init__(
        self, settings: Settings, handler_factory: Callable[[], HandlerLike], on_fatal: Callable[[], None]
    ):
        self.settings = settings
        self.handler_factory = handler_factory
        self.on_fatal = on_fatal
        self.handler: HandlerLike | None = None
        self.readiness = Readiness(settings)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # What a request takes here lately, from its start to its answer (0 until one ended).
        self._service_s = 0.0
        self._started_in: int | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start loading in this process (idempotent; a fork needs its own thread and executor)."""
        with self._start_lock:
            if self._started_in == os.getpid():
                return
            self._started_in = os.getpid()
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self.settings.requests_per_worker, thread_name_prefix="invoke"
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
            metrics.model_loaded(loaded - started)
        except BaseException:  # noqa: BLE001 - anything, even SystemExit from user code, means no model
            log.critical("model failed to load; this worker cannot serve:\n%s", traceback.format_exc())
            self.on_fatal()
            return
        self.handler = handler
        self.readiness.mark_ready()

    def is_ready(self) -> bool:
        return self.handler is not None and self.readiness.is_ready()

    def invoke(
        self,
        body: bytes,
        content_type: str,
        accept: str | None,
        *,
        arrived: float,
        request_id: str | None = None,
        custom_attributes: str | None = None,
    ) -> tuple[bytes, str]:
        """The handler's answer to one request that arrived at `arrived` (time.monotonic())."""
        handler = self.handler
        if handler is None or not self.readiness.ready.is_set() or self._executor is None:
            raise ServiceUnavailable(
                "the model is still loading: retry shortly", retry_after_s=LOADING_RETRY_AFTER_S
            )
        deadline = arrived + self.settings.request_timeout_s
        self._check_budget_left(deadline)
        context = Context(
            settings=self.settings,
            model_dir=handler.model_dir,
            request_id=request_id,
            custom_attributes=custom_attributes,
            deadline=deadline,
        )

        def run_in_budget() -> tuple[bytes, str]:
            self._check_budget_left(deadline)  # it may have waited for a thread (work past its budget)
            began = time.monotonic()
            answer = handler.invoke(body, content_type, accept, context)
            took = time.monotonic() - began
            weight = SERVICE_EWMA_WEIGHT if self._service_s else 1.0
            self._service_s += weight * (took - self._service_s)
            return answer

        future = self._executor.submit(contextvars.copy_context().run, run_in_budget)
        try:
            return future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError:
            if future.cancel():  # it never started
                self._check_budget_left(deadline)
        except DeadlineExceeded:
            if time.monotonic() < deadline:
                raise  # a hook's own, not this budget's
            # the batcher gave up at this deadline: the budget's one answer below
        raise GatewayTimeout(
            f"the request did not finish within its time budget of {self.settings.request_timeout_s} s "
            f"(SAGEMAKER_MODEL_SERVER_TIMEOUT): send less work per request or raise the budget"
        )

    def _check_budget_left(self, deadline: float) -> None:
        """A request with less of its budget left than requests take here lately is dropped before
        any work (503, the client may retry): it would be computed only to time out."""
        left = deadline - time.monotonic()
        # At most half the budget: a fresh request always runs, so one long request cannot make
        # the typical time exceed every request's budget and lock them all out.
        needs = min(SERVICE_MARGIN * self._service_s, self.settings.request_timeout_s / 2)
        if left <= 0 or left < needs:
            raise ServiceUnavailable(
                f"the container is overloaded: this request waited {self.settings.request_timeout_s - left:.1f} s "
                f"for a worker, leaving {max(left, 0.0):.1f} s of its time budget of "
                f"{self.settings.request_timeout_s} s (SAGEMAKER_MODEL_SERVER_TIMEOUT), less than requests "
                f"need now ({needs:.1f} s); retry shortly",
                retry_after_s=OVERLOAD_RETRY_AFTER_S,
            )
