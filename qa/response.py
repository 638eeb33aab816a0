"""Response encoding: Accept negotiation (q-values, wildcards) and the JSON / jsonlines bodies."""

from __future__ import annotations

import json

from qa.errors import PredictionError, UnsupportedAccept
from qa.request import JSON, JSONLINES, MEDIA_TYPE_ALIASES, BatchResults, LineResults

RESPONSE_TYPES = (JSON, JSONLINES)


def parse_accept(header: str) -> list[tuple[str, float, int]]:
    """[(media range, q, position)] from an Accept header; malformed q-values count as 1."""
    ranges = []
    for position, part in enumerate(header.split(",")):
        media, *params = part.split(";")
        media = media.strip().lower()
        if not media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 1.0
        ranges.append((MEDIA_TYPE_ALIASES.get(media, media), q, position))
    return ranges


def _specificity(media_range: str, media_type: str) -> int:
    """How specifically a range matches a type: 2 exact, 1 type/*, 0 */*, -1 no match."""
    if media_range == media_type:
        return 2
    main, _, sub = media_range.partition("/")
    if sub == "*" and main == media_type.partition("/")[0]:
        return 1
    if media_range in ("*/*", "*"):
        return 0
    return -1


def negotiate(accept: str | None, default: str = JSON) -> str:
    """The response type for an Accept header; UnsupportedAccept when nothing we send is acceptable."""
    if accept is None or not accept.strip():
        return default
    ranges = parse_accept(accept)
    if not ranges:
        return default
    best = None
    for media_type in RESPONSE_TYPES:
        matches = [
            (_specificity(r, media_type), q, pos) for r, q, pos in ranges if _specificity(r, media_type) >= 0
        ]
        if not matches:
            continue
        # The most specific range decides this type's q (RFC 9110 §12.5.1).
        specificity, q, position = max(matches, key=lambda m: (m[0], -m[2]))
        if q <= 0:
            continue
        rank = (q, specificity, media_type == default, -position)
        if best is None or rank > best[0]:
            best = (rank, media_type)
    if best is None:
        raise UnsupportedAccept(
            f"Accept {accept!r} is not supported: this endpoint answers {', '.join(RESPONSE_TYPES)}"
        )
    return best[1]


def _to_jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays from a custom predict_fn
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_to_jsonable)
    except (TypeError, ValueError) as exc:
        raise PredictionError(f"the prediction cannot be encoded as JSON: {exc}") from exc


def encode_response(prediction, accept: str | None) -> tuple[bytes, str]:
    default = JSONLINES if isinstance(prediction, LineResults) else JSON
    media_type = negotiate(accept, default)
    if media_type == JSONLINES:
        records = prediction if isinstance(prediction, LineResults | BatchResults) else [prediction]
        body = "".join(_dumps(record) + "\n" for record in records)
    else:
        body = _dumps(prediction)
    return body.encode("utf-8"), media_type
