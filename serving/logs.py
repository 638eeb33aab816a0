"""Logging for every Python process of the stack: one shape, with the request id in each line.

The web app sets the request id (nginx's `X-Request-Id`) in a context variable for the duration
of a request; a filter copies it into every record, so handler and model logs carry it too.
QA_LOG_FORMAT=text (the default, for people at a terminal) writes
`time LEVEL [pid] [request id] logger: message key=value ...`; QA_LOG_FORMAT=json one JSON object
per line with the same fields, which CloudWatch Logs Insights queries directly. A record's
structured fields (`extra={"fields": {...}}`, as the per-request line has) are top-level keys in
JSON and key=value pairs in text.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import BinaryIO

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] [%(request_id)s] %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, fmt: str = LOG_FORMAT):
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = "-"
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "pid": record.process,
            "request_id": getattr(record, "request_id", None)
            if getattr(record, "request_id", "-") != "-"
            else None,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def as_json_line(raw: bytes, logger: str, level: int) -> bytes:
    """A line another program printed, in the JSON shape: a JSON object goes out as it is, any
    other line becomes the message of one (its pid unknown)."""
    text = raw.rstrip(b"\r\n").decode(errors="replace")
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text.encode() + b"\n"
        except ValueError:
            pass
    record = logging.LogRecord(logger, level, "", 0, text, None, None)
    record.process = None
    return (JsonFormatter().format(record) + "\n").encode()


def relay_as_json_lines(source: BinaryIO, sink: BinaryIO, logger: str, level: int) -> None:
    """Copy `source` to `sink` line by line in the JSON shape, until every writer has closed it.
    It keeps reading whatever happens to `sink`: a writer must never block on a full pipe."""
    with source:
        for raw in source:
            if raw.strip():
                try:
                    sink.write(as_json_line(raw, logger, level))
                except (OSError, ValueError):
                    pass


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    text = str(value)
    return json.dumps(text) if " " in text or not text else text


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: int, stream=None, log_format: str = "text") -> None:
    """Route all logging to one stream handler (stderr by default) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_qa_serving", False):
            root.removeHandler(old)
    handler._qa_serving = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
