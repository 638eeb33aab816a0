"""What can go wrong in question answering, as the caller should hear it. No HTTP here: the
serving layer's error table (serving/errors.py) gives each type its status."""

from __future__ import annotations


class QAError(Exception):
    """An error whose message is meant for the client: it names the field and what is allowed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(QAError):
    """The request is malformed or asks for something out of bounds."""


class RequestTooLarge(QAError):
    """The request asks for more items or model windows than one request may."""


class UnsupportedContentType(QAError):
    """The body's media type or charset is not one we parse."""


class UnsupportedAccept(QAError):
    """Nothing we can send is acceptable to the client."""


class Overloaded(QAError):
    """The work cannot be taken now (queue full, shutting down); retrying later may succeed."""

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(QAError):
    """The request's time budget ran out before its windows reached the model."""


class ModelLoadError(QAError):
    """The model directory cannot be served (missing files, refused weights, unsupported model)."""


class PredictionError(QAError):
    """The prediction could not be turned into a response."""
