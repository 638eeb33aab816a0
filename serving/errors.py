"""The closed list of errors a request can end in, each with its HTTP status.

Every layer raises these; the web app turns them into the one JSON error shape
`{"code": int, "type": str, "message": str}`. Anything else is a 500 whose traceback goes to
the log, never to the client.
"""

from __future__ import annotations


class ServingError(Exception):
    """An error with a status code and a message meant for the client."""

    status: int = 500
    type: str = "InternalServerError"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def to_body(self) -> dict:
        return error_body(self.status, self.type, self.message)


class BadRequest(ServingError):
    status = 400
    type = "BadRequest"


class NotFound(ServingError):
    status = 404
    type = "NotFound"


class MethodNotAllowed(ServingError):
    status = 405
    type = "MethodNotAllowed"


class NotAcceptable(ServingError):
    status = 406
    type = "NotAcceptable"


class PayloadTooLarge(ServingError):
    status = 413
    type = "PayloadTooLarge"


class UnsupportedMediaType(ServingError):
    status = 415
    type = "UnsupportedMediaType"


class InternalError(ServingError):
    status = 500
    type = "InternalServerError"


class ServiceUnavailable(ServingError):
    status = 503
    type = "ServiceUnavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class RequestTimeout(ServingError):
    status = 504
    type = "GatewayTimeout"


def error_body(status: int, type_: str, message: str) -> dict:
    return {"code": status, "type": type_, "message": message}
