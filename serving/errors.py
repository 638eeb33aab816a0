"""THE error table: every error a request can end in, its HTTP status and its JSON body.

    {"code": <status>, "type": <the status's name below>, "message": <what to change>}

The QA library raises `qa.errors` types (no HTTP there); the web layer and users' hooks raise
the `ServingError` types here. `as_serving_error` turns any of them, or anything else (a 500 whose
details stay in the log), into the table's terms and says whether it was expected (else its
traceback is logged); `error_response` gives the (status, headers, body) of that answer. The web
app and the MMS service both answer through them, and nginx's own error pages are rendered from
the same table at start-up (`nginx_error_pages`). The statuses and when each happens:
docs/contract.md#errors.
"""

from __future__ import annotations

import json

from qa import errors as qa_errors

# status -> the body's "type"
TYPES = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    408: "RequestTimeout",
    413: "PayloadTooLarge",
    414: "URITooLong",
    415: "UnsupportedMediaType",
    500: "InternalServerError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
    505: "HTTPVersionNotSupported",
}
# The QA library's errors -> status.
QA_STATUS: dict[type[qa_errors.QAError], int] = {
    qa_errors.InvalidRequest: 400,
    qa_errors.UnsupportedAccept: 406,
    qa_errors.RequestTooLarge: 413,
    qa_errors.UnsupportedContentType: 415,
    qa_errors.ModelLoadError: 500,
    qa_errors.PredictionError: 500,
    qa_errors.Overloaded: 503,
    qa_errors.DeadlineExceeded: 504,
}
ROUTES = "use GET /ping, POST /invocations or GET /execution-parameters"
# What nginx says when it answers by itself (the app never saw the request): nginx's status ->
# (the status sent, the message). {max_body_mb} and {proxy_timeout_s} come from the settings.
NGINX_PAGES = {
    400: (400, "malformed HTTP request"),
    404: (404, f"no such route: {ROUTES}"),
    405: (405, "method not allowed on this route"),
    408: (408, "the client did not send the request in time"),
    413: (
        413,
        "request body larger than {max_body_mb} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB): split the request into smaller ones",
    ),
    414: (414, "request URI too long"),
    # nginx's own code for oversized headers; it always sends it as a 400, so the body says 400 too.
    494: (400, "request headers too large"),
    500: (500, "internal error in the proxy; details are in the server log"),
    502: (502, "the model server is not answering; retry shortly"),
    503: (503, "the model server is not ready; retry shortly"),
    504: (504, "the model server did not answer within {proxy_timeout_s} s"),
    501: (501, "not implemented: send the body as is or chunked (no other Transfer-Encoding)"),
    505: (505, "HTTP version not supported: use HTTP/1.1"),
}
# gunicorn answers a request it cannot parse itself (a control character in a header, raw bytes in
# the path), before the app: that message never echoes the request.
GUNICORN_MESSAGE = "malformed HTTP request: a header or the request line holds characters HTTP does not allow"
NGINX_RETRY_AFTER_S = 5  # on nginx's 503: the app behind is starting or restarting a worker
# nginx's 503 on POST /invocations past the requests served and waiting (limit_conn).
OVERLOADED_MESSAGE = (
    "the container is overloaded: {waiting} requests are already waiting for a worker "
    "(QA_MAX_WAITING_REQUESTS); retry shortly"
)
OVERLOADED_RETRY_AFTER_S = 1
INTERNAL_MESSAGE = "internal error while serving the request{where}; details are in the server log"


class ServingError(Exception):
    """An error with a status and a message meant for the client (web layer, users' hooks)."""

    status: int = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        return TYPES[self.status]

    def body(self) -> bytes:
        return error_body(self.status, self.message)


class BadRequest(ServingError):
    status = 400


class NotFound(ServingError):
    status = 404


class MethodNotAllowed(ServingError):
    status = 405


class NotAcceptable(ServingError):
    status = 406


class PayloadTooLarge(ServingError):
    status = 413


class UnsupportedMediaType(ServingError):
    status = 415


class InternalError(ServingError):
    status = 500


class ServiceUnavailable(ServingError):
    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class GatewayTimeout(ServingError):
    status = 504


def as_serving_error(error: BaseException, request_id: str | None = None) -> tuple[ServingError, bool]:
    """(the error in the table's terms, whether it was expected). Unexpected errors become a
    500 that names the request id, never their own text (no paths or tracebacks to clients): the
    caller logs their traceback."""
    if isinstance(error, ServingError):
        return error, True
    if isinstance(error, qa_errors.QAError):
        status = next(status for kind, status in QA_STATUS.items() if isinstance(error, kind))
        served = ServingError(error.message)
        served.status = status
        if isinstance(error, qa_errors.Overloaded):
            served.headers["Retry-After"] = str(error.retry_after_s)
        return served, True
    where = f" (request id {request_id})" if request_id else ""
    return InternalError(INTERNAL_MESSAGE.format(where=where)), False


def error_body(status: int, message: str) -> bytes:
    """The one JSON error body."""
    return json.dumps({"code": status, "type": TYPES[status], "message": message}).encode()


def error_response(error: BaseException, request_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for any error."""
    served, _ = as_serving_error(error, request_id)
    return served.status, served.headers, served.body()


def raw_error_response(status: int) -> bytes:
    """A whole HTTP/1.1 error response in the table's shape, for gunicorn's own errors."""
    status = status if status in TYPES and status >= 400 else 400
    message = GUNICORN_MESSAGE if status < 500 else INTERNAL_MESSAGE.format(where="")
    body = error_body(status, message)
    head = f"HTTP/1.1 {status} {TYPES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def nginx_error_pages(max_body_mb: int, proxy_timeout_s: int, waiting: int) -> str:
    """nginx's `error_page` lines and the internal locations that answer them, in the table's
    JSON shape (nginx's HTML pages never reach a client)."""
    lines = [f"error_page {code} /__error/{code};" for code in NGINX_PAGES]
    lines.append("location /__error/ {")
    lines.append("    internal;")
    lines.append("    default_type application/json;")
    pages = {
        str(code): (status, message.format(max_body_mb=max_body_mb, proxy_timeout_s=proxy_timeout_s))
        for code, (status, message) in NGINX_PAGES.items()
    }
    pages["overloaded"] = (503, OVERLOADED_MESSAGE.format(waiting=waiting))
    for page, (status, message) in pages.items():
        # nginx's add_header in a location replaces the outer ones: each location sets all its own.
        headers = ["add_header X-Request-Id $qa_request_id always;"]
        if status == 503:
            retry_after = OVERLOADED_RETRY_AFTER_S if page == "overloaded" else NGINX_RETRY_AFTER_S
            headers.append(f"add_header Retry-After {retry_after} always;")
        if status == 405:  # what the route serves (nginx itself refuses only TRACE)
            headers.append("add_header Allow $qa_allow always;")
        quoted = error_body(status, message).decode().replace("\\", "\\\\").replace("'", "\\'")
        lines.append(
            f"    location = /__error/{page} {{ {' '.join(headers)} return {status} '{quoted}\\n'; }}"
        )
    lines.append("}")
    return "\n".join(lines)


def nginx_overloaded_pages() -> str:
    """The `error_page` lines of POST /invocations: the server's, but its 503 (limit_conn's) is the
    overload page (a location's own error_page lines replace all of the server's)."""
    return "\n".join(
        f"error_page {code} /__error/{'overloaded' if code == 503 else code};" for code in NGINX_PAGES
    )
