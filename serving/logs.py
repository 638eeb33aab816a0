"""Logging for every process of the stack: one line format, with the request id in each line.

The web app sets the request id (nginx's `X-Request-Id`) in a context variable for the duration
of a request; a filter copies it into every record, so handler and model logs carry it too.
"""

from __future__ import annotations

import contextvars
import logging
import sys

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] [%(request_id)s] %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


def configure(level: int, stream=None) -> None:
    """Route all logging to one stream handler (stderr by default) with the request-id format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_qa_serving", False):
            root.removeHandler(old)
    handler._qa_serving = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
