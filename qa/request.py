"""Request parsing and validation for extractive QA (docs/contract.md#requests, #errors), with no model involved.

Every body form becomes a `QARequest`: one `QAQuery` per JSON document (a JSON body is one, a
jsonlines body one per line, a CSV body one batch), each holding its items and parameters.
Every rejection is a `qa.errors` type whose message names the offending key, item or line
and what would be accepted. Checks that need the tokenizer (normalisation, window counts,
`max_seq_len` against the model) live in qa/model.py.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
from collections.abc import Mapping

from qa.errors import InvalidRequest, QAError, RequestTooLarge, UnsupportedContentType

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
# Spellings of the same media types seen in the wild; answered as the canonical one.
MEDIA_TYPE_ALIASES = {
    JSON: JSON,
    "application/x-json": JSON,
    "text/json": JSON,
    JSONLINES: JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-ndjson": JSONLINES,
    CSV: CSV,
}
SUPPORTED_CONTENT_TYPES = (JSON, JSONLINES, CSV)

ITEM_KEYS = ("question", "context")
ENVELOPE_KEYS = ("inputs", "parameters")

# Upper bounds keep every request's work bounded; max_seq_len is also checked against the model.
MAX_TOP_K = 100
MAX_ANSWER_LEN = 10000
MAX_SEQ_LEN_LIMIT = 1_000_000
MAX_QUESTION_LEN = 100000


@dataclasses.dataclass(frozen=True)
class QAParams:
    """The former QuestionAnsweringPipeline's parameters, with its defaults.

    `max_seq_len` None means min(tokenizer max length, 384) and `doc_stride` None means
    min(max_seq_len // 2, 128), resolved against the model as the pipeline did.
    `max_question_len` is validated but, as in the pipeline with a fast tokenizer, has no effect.
    """

    top_k: int = 1
    max_answer_len: int = 15
    max_seq_len: int | None = None
    doc_stride: int | None = None
    max_question_len: int = 64
    handle_impossible_answer: bool = False
    align_to_words: bool = True


# name -> (kind, minimum, maximum)
PARAMETER_SPECS: dict[str, tuple[type, int | None, int | None]] = {
    "top_k": (int, 1, MAX_TOP_K),
    "max_answer_len": (int, 1, MAX_ANSWER_LEN),
    "max_seq_len": (int, 1, MAX_SEQ_LEN_LIMIT),
    "doc_stride": (int, 0, MAX_SEQ_LEN_LIMIT),
    "max_question_len": (int, 1, MAX_QUESTION_LEN),
    "handle_impossible_answer": (bool, None, None),
    "align_to_words": (bool, None, None),
}


@dataclasses.dataclass(frozen=True)
class QAItem:
    question: str
    context: str
    where: str  # how messages name this item, e.g. "inputs[2]" or "line 3: inputs"


@dataclasses.dataclass(frozen=True)
class QAQuery:
    """One JSON document's worth of work: its items, parameters, and whether it was a list."""

    items: tuple[QAItem, ...]
    params: QAParams
    batched: bool  # a list in gives a list out, even of length one
    where: str = ""  # prefix naming the document in messages, e.g. "line 3: "
    # A jsonlines record refused on its own (QA_JSONLINES_ERRORS=record): answered by this error
    # on its output line, with no items.
    rejected: QAError | None = None


@dataclasses.dataclass(frozen=True)
class QARequest:
    queries: tuple[QAQuery, ...]
    media_type: str  # canonical request type: JSON, JSONLINES or CSV

    @property
    def line_oriented(self) -> bool:
        """One result per query, as lines (jsonlines in, jsonlines out by default)."""
        return self.media_type == JSONLINES

    @property
    def item_count(self) -> int:
        return sum(len(q.items) for q in self.queries)


class LineResults(list):
    """Results of a jsonlines request, one per input line; output_fn answers them as lines."""


class BatchResults(list):
    """Results of one batched query, one per item; jsonlines output puts each on its own line."""


def split_media_type(header: str | None) -> tuple[str | None, dict[str, str]]:
    """`"application/json; charset=UTF-8"` -> ("application/json", {"charset": "UTF-8"})."""
    if header is None or not header.strip():
        return None, {}
    main, *rest = header.split(";")
    params = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def parse_request(body, content_type: str | None, *, max_items: int, per_record: bool = False) -> QARequest:
    """Decode and validate a request body of any supported content type. `per_record`: a bad
    jsonlines record is kept as a rejected query instead of failing the request."""
    main, params = split_media_type(content_type)
    media_type = JSON if main is None else MEDIA_TYPE_ALIASES.get(main)
    if media_type is None:
        raise UnsupportedContentType(
            f"Content-Type {content_type!r} is not supported: use one of {', '.join(SUPPORTED_CONTENT_TYPES)}"
        )
    text = decode_text(body, params.get("charset"))
    if media_type == JSON:
        queries: tuple[QAQuery, ...] = (query_from_document(load_json(text), max_items=max_items),)
    elif media_type == JSONLINES:
        queries = queries_from_jsonlines(text, max_items=max_items, per_record=per_record)
    else:
        queries = (query_from_csv(text, max_items=max_items),)
    request = QARequest(queries=queries, media_type=media_type)
    check_item_count(request.item_count, max_items)
    return request


def request_from_object(data, *, max_items: int) -> QARequest:
    """A QARequest from an already decoded JSON document (a custom input_fn's output)."""
    if isinstance(data, QARequest):
        return data
    request = QARequest(queries=(query_from_document(data, max_items=max_items),), media_type=JSON)
    check_item_count(request.item_count, max_items)
    return request


def check_item_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise RequestTooLarge(
            f"the request holds {count} question/context items; the limit is {max_items} per request "
            f"(setting QA_MAX_ITEMS_PER_REQUEST): split the request"
        )


def decode_text(body, charset: str | None) -> str:
    if isinstance(body, str):
        text = body
    else:
        if isinstance(body, memoryview | bytearray):
            body = bytes(body)
        if not isinstance(body, bytes):
            raise InvalidRequest(f"the request body must be bytes or text, not {type(body).__name__}")
        encoding = "utf-8"
        if charset:
            try:
                encoding = codecs.lookup(charset).name
            except (LookupError, ValueError):  # ValueError: a NUL in the name
                raise UnsupportedContentType(
                    f"charset {charset!r} is not supported: send UTF-8 (charset=utf-8)"
                ) from None
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"the request body is not valid {exc.encoding.upper()}: "
                f"undecodable byte at offset {exc.start}; send text encoded as UTF-8"
            ) from None
        except UnicodeError:  # codecs that fail without saying where (punycode, idna)
            raise InvalidRequest(
                f"the request body is not valid {encoding.upper()}: send text encoded as UTF-8"
            ) from None
        except LookupError:  # a codec, but not of text (rot13, base64, zlib, ...)
            raise UnsupportedContentType(
                f"charset {charset!r} is not a text encoding: send UTF-8 (charset=utf-8)"
            ) from None
    return text.removeprefix("\ufeff")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str, where: str = ""):
    if not text.strip():
        raise InvalidRequest(f"{where}the request body is empty: send a JSON object with 'inputs'")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{where}malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's own advice is not for clients
            raise InvalidRequest(f"{where}malformed JSON: a number has more than 4300 digits") from None
        raise InvalidRequest(f"{where}malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"{where}malformed JSON: nested too deeply") from None


def queries_from_jsonlines(text: str, *, max_items: int, per_record: bool = False) -> tuple[QAQuery, ...]:
    queries: list[QAQuery] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline) carry no record
        where = f"line {number}: "
        try:
            query = query_from_document(load_json(line, where), max_items=max_items, where=where)
            check_item_count(sum(len(q.items) for q in queries) + len(query.items), max_items)
        except QAError as exc:
            if not per_record:
                raise
            query = QAQuery(items=(), params=QAParams(), batched=False, where=where, rejected=exc)
        queries.append(query)
    if not queries:
        raise InvalidRequest("the request has no records: send one JSON object per line")
    return tuple(queries)


def query_from_csv(text: str, *, max_items: int) -> QAQuery:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InvalidRequest(f"malformed CSV: {exc}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise InvalidRequest(
            "the CSV body is empty: send a header row with 'question' and 'context', then rows"
        )
    header = [cell.strip().lower() for cell in rows[0]]
    unknown = [name for name in header if name not in ITEM_KEYS]
    missing = [name for name in ITEM_KEYS if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise InvalidRequest(
            f"the CSV header must name exactly the columns 'question' and 'context' (got {rows[0]!r})"
        )
    records = rows[1:]
    if not records:
        raise InvalidRequest("the CSV body has a header but no rows: the batch is empty")
    check_item_count(len(records), max_items)
    items = []
    for index, row in enumerate(records):
        where = f"row {index + 1}"
        if len(row) != len(header):
            raise InvalidRequest(f"CSV {where} has {len(row)} fields; the header has {len(header)}")
        items.append(_item({name: cell for name, cell in zip(header, row)}, where))
    return QAQuery(items=tuple(items), params=QAParams(), batched=True)


def query_from_document(document, *, max_items: int, where: str = "") -> QAQuery:
    """One JSON document in any of the four shapes of docs/contract.md#requests."""
    if isinstance(document, list):
        items = _items(document, "", max_items, where)
        return QAQuery(items=items, params=QAParams(), batched=True, where=where)
    if not isinstance(document, dict):
        raise InvalidRequest(
            f"{where}the body must be a JSON object with 'inputs' (or 'question' and 'context') "
            f"or a list of such objects, not {_json_type(document)}"
        )
    if "inputs" in document:
        _reject_unknown(document, ENVELOPE_KEYS, where, "the top level")
        inputs = document["inputs"]
        params = parse_parameters(document.get("parameters"), where)
        if isinstance(inputs, list):
            return QAQuery(
                items=_items(inputs, "inputs", max_items, where), params=params, batched=True, where=where
            )
        if isinstance(inputs, dict):
            return QAQuery(
                items=(_item(inputs, f"{where}inputs"),), params=params, batched=False, where=where
            )
        raise InvalidRequest(
            f"{where}'inputs' must be an object with 'question' and 'context' or a list of such objects, "
            f"not {_json_type(inputs)}"
        )
    if "question" in document or "context" in document:
        _reject_unknown(document, ITEM_KEYS + ("parameters",), where, "the top level")
        params = parse_parameters(document.get("parameters"), where)
        item = {k: v for k, v in document.items() if k != "parameters"}
        return QAQuery(items=(_item(item, f"{where}body"),), params=params, batched=False, where=where)
    keys = ", ".join(repr(k) for k in document) or "no keys"
    raise InvalidRequest(f"{where}the body needs 'inputs' (or 'question' and 'context'); got {keys}")


def _items(values: list, name: str, max_items: int, where: str) -> tuple[QAItem, ...]:
    label = name or "body"
    if not values:
        what = f"'{name}'" if name else "the request body"
        raise InvalidRequest(
            f"{where}{what} is an empty list: the batch needs at least one question/context item"
        )
    check_item_count(len(values), max_items)
    return tuple(_item(value, f"{where}{label}[{index}]") for index, value in enumerate(values))


def _item(value, where: str) -> QAItem:
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"{where} must be an object with 'question' and 'context', not {_json_type(value)}"
        )
    _reject_unknown(value, ITEM_KEYS, "", where)
    fields = {}
    for key in ITEM_KEYS:
        if key not in value:
            raise InvalidRequest(
                f"{where}.{key} is missing: each item needs 'question' and 'context' strings"
            )
        text = value[key]
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}.{key} must be a string, not {_json_type(text)}")
        if not text.strip():
            raise InvalidRequest(f"{where}.{key} is empty or only whitespace: send some text")
        if not _is_valid_text(text):
            raise InvalidRequest(f"{where}.{key} is not valid text: it holds an unpaired UTF-16 surrogate")
        fields[key] = text
    return QAItem(question=fields["question"], context=fields["context"], where=where)


def parse_parameters(raw, where: str = "") -> QAParams:
    if raw is None:
        return QAParams()
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{where}'parameters' must be an object, not {_json_type(raw)}")
    unknown = [key for key in raw if key not in PARAMETER_SPECS]
    if unknown:
        hint = " (did you mean 'top_k'?)" if "topk" in unknown else ""
        raise InvalidRequest(
            f"{where}unknown key(s) in parameters: {_keys_named(unknown)}{hint}; "
            f"allowed keys are {', '.join(PARAMETER_SPECS)}"
        )
    values = {}
    for key, value in raw.items():
        if value is None:
            continue  # null means the default, as in the pipeline
        kind, low, high = PARAMETER_SPECS[key]
        if kind is bool:
            if not isinstance(value, bool):
                raise InvalidRequest(
                    f"{where}parameters.{key} must be true or false, not {_json_repr(value)}"
                )
        else:
            assert low is not None and high is not None  # integers have bounds (PARAMETER_SPECS)
            # bool is a subclass of int in Python, but true is not an integer here.
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidRequest(
                    f"{where}parameters.{key} must be an integer between {low} and {high}, not {_json_repr(value)}"
                )
            if not low <= value <= high:
                raise InvalidRequest(
                    f"{where}parameters.{key}={_json_repr(value)} is out of range: it must be between {low} and {high}"
                )
        values[key] = value
    params = QAParams(**values)
    if (
        params.max_seq_len is not None
        and params.doc_stride is not None
        and params.doc_stride >= params.max_seq_len
    ):
        raise InvalidRequest(
            f"{where}parameters.doc_stride={params.doc_stride} must be below "
            f"parameters.max_seq_len={params.max_seq_len}"
        )
    return params


def _reject_unknown(value: dict, allowed: tuple[str, ...], where: str, place: str) -> None:
    unknown = [key for key in value if key not in allowed]
    if unknown:
        raise InvalidRequest(
            f"{where}unknown key(s) in {place}: {_keys_named(unknown)}; allowed keys are {', '.join(allowed)}"
        )


def _is_valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _keys_named(keys: list) -> str:
    """A client's keys quoted back, at most five and each cut short: a message must not grow with
    the input."""
    named = [text if len(text := repr(key)) <= 40 else text[:37] + "..." for key in keys[:5]]
    return ", ".join(named) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def _json_repr(value) -> str:
    """A client's value quoted back, cut short; never fails, whatever the value."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return "an integer of more than 40 digits"  # str() of a huge int is slow, then refused
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = f"a {type(value).__name__}" if isinstance(value, (list, dict)) else "an unprintable value"
    return text if len(text) <= 40 else text[:37] + "..."
