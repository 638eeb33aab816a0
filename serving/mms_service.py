"""Multi-model endpoints: the service Multi Model Server runs for each model it loads.

With SAGEMAKER_MULTI_MODEL=true the entrypoint hands the container to Multi Model Server through
the SageMaker Inference Toolkit (`sagemaker_inference.model_server.start_model_server`), as the
AWS framework images do. MMS implements SageMaker's model management API (`POST /models`,
`GET /models`, `DELETE /models/<name>`, `POST /models/<name>/invoke`, `GET /ping`) and starts one
Python worker per loaded model, which imports this module: `handle(None, context)` once to load
the model from the directory SageMaker gave, then `handle(requests, context)` per batch.

Both go through the same `Handler` as the single-model stack (hooks, a user's
`<model>/code/inference.py`, warm-up), and errors leave in the same JSON shape with the same
status: only the web layer differs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from qa.memory import MB, InsufficientMemory, free_bytes, process_bytes
from serving import logs, mms_unregister
from serving.errors import TYPES, as_serving_error
from serving.handler import CUSTOM_ATTRIBUTES, Handler, install_user_requirements
from serving.model_memory import first_to_go_while_loading
from serving.settings import Settings

log = logging.getLogger(__name__)


class QAService:
    def __init__(self) -> None:
        self.handler: Handler | None = None

    def initialize(self, context: Any) -> None:
        """Load this worker's model and answer one warm-up request, or fail the load."""
        settings = Settings.load(os.environ)
        # MMS's worker logs to stdout (basicConfig), which its front end tags INFO, and stderr WARN:
        # one handler, ours, on stdout, or every line shows twice, once as a warning.
        for handler in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(handler)
        logs.configure(settings.log_level, stream=sys.stdout, log_format=settings.log_format)
        model_dir = Path(context.system_properties["model_dir"])
        # The model's own code/ overrides the built-in hooks, as `/opt/ml/model/code` does for one model.
        settings = dataclasses.replace(settings, model_dir=model_dir)
        started = time.monotonic()
        try:
            with first_to_go_while_loading():
                # Before its hooks are imported, as in single-model mode (the AWS toolkits install
                # only /opt/ml/model/code/requirements.txt, so a multi-model endpoint's models get none).
                install_user_requirements(settings)
                handler = Handler.load(settings, model_dir)
                handler.load_model()
                handler.warm_up()
        except (InsufficientMemory, MemoryError) as exc:
            # MMS answers a MemoryError from a load with 507, SageMaker's "unload a model and
            # retry", but keeps the model registered: mms_unregister.py takes it off.
            log.error("model %s not loaded: %s", context.model_name, str(exc) or "out of memory")
            mms_unregister.start(context.model_name, settings.port)
            raise MemoryError(str(exc)) from exc
        self.handler = handler
        held, free = process_bytes(), free_bytes()
        log.info(
            "model %s loaded from %s in %.1f s; it holds %s MB, %s MB left free",
            context.model_name,
            model_dir,
            time.monotonic() - started,
            f"{held / MB:,.0f}",
            "?" if free is None else f"{free / MB:,.0f}",
            extra={"fields": {"model": context.model_name, "model_memory_bytes": held, "free_bytes": free}},
        )

    def handle(self, requests: list[dict], context: Any) -> list[bytes]:
        assert self.handler is not None
        return [self._answer(index, request, context) for index, request in enumerate(requests)]

    def _answer(self, index: int, request: dict, context: Any) -> bytes:
        headers = {
            k.lower(): v
            for k, v in context.request_processor[index].get_request_properties().items()
            if isinstance(v, str)
        }
        body = request.get("body", b"")
        if isinstance(body, str):
            body = body.encode()
        elif not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()  # MMS decoded a JSON body (decode_input_request=true)
        settings = self.handler.settings
        attributes = headers.get(CUSTOM_ATTRIBUTES.lower())
        if attributes is not None:  # echoed back, as the single-model stack does
            context.set_response_header(index, CUSTOM_ATTRIBUTES, attributes)
        request_context = self.handler.context(
            request_id=context.get_request_id(index),
            custom_attributes=attributes,
            deadline=time.monotonic() + settings.request_timeout_s,
        )
        try:
            data, content_type = self.handler.invoke(
                bytes(body),
                headers.get("content-type") or "application/json",
                headers.get("accept"),
                request_context,
            )
        except Exception as error:  # the error table's answer; a traceback goes to the log only
            return _error(context, index, error, request_context.request_id)
        context.set_response_content_type(index, content_type)
        return data


def _error(context: Any, index: int, error: Exception, request_id: str | None) -> bytes:
    served, expected = as_serving_error(error, request_id)
    if not expected:
        log.error("request failed", exc_info=error)
    context.set_response_status(served.status, TYPES[served.status], index)
    context.set_response_content_type(index, "application/json")
    for key, value in served.headers.items():
        context.set_response_header(index, key, value)
    return served.body()


_service = QAService()


def handle(data: list[dict] | None, context: Any) -> list[bytes] | None:
    """MMS's entry point: `data` is None once, when the model is loaded."""
    if _service.handler is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
