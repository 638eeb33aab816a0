"""Properties of request decoding and validation (qa/request.py), with hypothesis.

Whatever the body and Content-Type, `parse_request` returns a `QARequest` or raises a `QAError`
that the error table (serving.errors.error_response) answers with a 4xx: never another exception,
never a 5xx. The same holds for `request_from_object` on any JSON value. Valid requests keep
every item they were sent, and parameters are accepted exactly when PARAMETER_SPECS allows them.

Runs are reproducible and leave nothing behind: derandomized, no example database, bounded counts.
The inputs that break the property today (a bug each) are kept out of the main properties and
checked by strict xfails at the end: fixing a bug turns its xfail into a failure, to be removed.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import string
import sys

import hypothesis_home
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from qa.errors import QAError, RequestTooLarge
from qa.request import (
    MEDIA_TYPE_ALIASES,
    PARAMETER_SPECS,
    QAParams,
    QARequest,
    parse_request,
    request_from_object,
    split_media_type,
)
from serving.errors import error_response

hypothesis_home.keep_out_of_the_tree()

MAX_ITEMS = 64


def bounded(max_examples: int):
    """A run of at most `max_examples`, the same on every machine, with no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def outcome(call) -> QARequest | None:
    """The property: a request, or a QAError the error table answers with a 4xx. Any other
    exception propagates and fails the test."""
    try:
        result = call()
    except QAError as error:
        status = error_response(error)[0]
        assert 400 <= status < 500, f"{type(error).__name__} -> {status}: {error.message}"
        note_event(f"{status} {type(error).__name__}")
        return None
    assert isinstance(result, QARequest), result
    note_event(f"parsed ({result.item_count} items)" if result.item_count < 2 else "parsed (2+ items)")
    return result


def note_event(what: str) -> None:
    """Counted in --hypothesis-show-statistics (outside a hypothesis test, nothing)."""
    if currently_in_test_context():
        event(what)


# ---- charsets ------------------------------------------------------------------------------------

# Codecs that `codecs.lookup` knows but that do not decode bytes to text: bytes-to-bytes codecs,
# whose bytes.decode raises LookupError, and codecs whose decoder raises a bare UnicodeError.
NON_TEXT_CODECS = ["base64", "hex", "zlib", "rot13", "uu", "bz2", "quopri", "idna", "punycode", "undefined"]


TEXT_CHARSETS = [
    "utf-8",
    "UTF-8",
    "utf8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "latin-1",
    "iso-8859-1",
    "ascii",
    "cp1252",
    "shift_jis",
    "koi8-r",
    "utf-7",
    "unicode_escape",
]
UNKNOWN_CHARSETS = ["", "utf-9", "x-unknown", "klingon", "utf_8_but_not"]
charset_names = st.one_of(
    st.sampled_from(TEXT_CHARSETS),
    st.sampled_from(UNKNOWN_CHARSETS),
    st.sampled_from(NON_TEXT_CODECS),
    st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=16),
    st.text(max_size=12),
)


@st.composite
def charset_params(draw) -> str:
    name = draw(charset_names)
    key = draw(st.sampled_from(["charset", "Charset", "CHARSET", " charset "]))
    value = draw(st.sampled_from(["{}", '"{}"', " {} "])).format(name)
    return f";{draw(st.sampled_from(['', ' ']))}{key}={value}"


other_params = st.sampled_from(["", ";", "; q=1", "; boundary=x", "; version=2", ";;", "; =x", "; charset"])

# Every accepted spelling, in any case, and random media types.
media_types = st.one_of(
    st.sampled_from(sorted(MEDIA_TYPE_ALIASES)),
    st.sampled_from(sorted(MEDIA_TYPE_ALIASES)).map(str.upper),
    st.sampled_from(["text/plain", "application/xml", "*/*", "application/", "/", "", "  "]),
    st.text(max_size=30),
)


@st.composite
def content_types(draw, main=media_types) -> str | None:
    if draw(st.sampled_from(range(10))) == 0:
        return None  # no Content-Type: application/json
    media_type = draw(main)
    params = draw(st.lists(st.one_of(charset_params(), other_params), max_size=2))
    return media_type + "".join(params)


supported_content_types = content_types(main=st.sampled_from(sorted(MEDIA_TYPE_ALIASES)))


# ---- arbitrary JSON ------------------------------------------------------------------------------

CONTROL = "".join(chr(c) for c in range(32)) + "\x7f\x85\u2028\u2029\ufeff\u200b"
characters = st.one_of(
    st.characters(),
    st.sampled_from(CONTROL),
    st.integers(0xD800, 0xDFFF).map(chr),  # unpaired surrogates
    st.sampled_from(" \t\n\r\u00a0\u3000"),
)
texts = st.text(characters, max_size=24)
# The longest integer Python's json reads or writes (sys.int_info.default_max_str_digits = 4300).
MAX_JSON_DIGITS = 4300
huge_ints = st.integers(10**18, 10**MAX_JSON_DIGITS - 1) | st.integers(-(10**MAX_JSON_DIGITS - 1), -(10**18))
integers = st.one_of(st.integers(), st.integers(-3, 1_000_001), huge_ints)
floats = st.floats(allow_nan=True, allow_infinity=True)
KEYS = ["inputs", "parameters", "question", "context", *PARAMETER_SPECS, "topk", ""]
keys = st.one_of(st.sampled_from(KEYS), texts)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=20,
)


@contextlib.contextmanager
def any_int_digits():
    """Lets json.dumps write integers past the default digit limit (restored at once)."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(previous)


def dumps(value, *, ensure_ascii: bool = True) -> str:
    """JSON text, NaN and Infinity written as the tokens the parser must refuse."""
    with any_int_digits():
        return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True)


@st.composite
def json_texts(draw) -> str:
    """One JSON document as text: arbitrary, a near-valid shape, or bytes-level garbage around it."""
    value = draw(mostly(near_valid_documents(), json_values, odds=2))
    text = dumps(value, ensure_ascii=draw(st.booleans()))
    edit = draw(st.sampled_from(["none"] * 5 + ["bom", "truncate", "append", "nan"]))
    if edit == "bom":
        text = "\ufeff" + text
    elif edit == "truncate" and text:
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif edit == "append":
        text += draw(st.sampled_from([" ", "\n", "x", "}", "]", ",", "\x00", " // comment"]))
    elif edit == "nan":
        text = text.replace("null", draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])), 1)
    return text


def encode(text: str, charset: str) -> bytes:
    if charset.lower().replace("-", "").replace("_", "") in ("utf8", ""):
        return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8
    return text.encode(charset, "replace") if charset != "unicode_escape" else text.encode(charset)


# ---- near-valid requests -------------------------------------------------------------------------

VALID_TEXT = ["Who built it?", "The bridge was built by Ada in 1901.", "Ünïcödé ✓", "a", "日本語の文"]


# Item text: usually valid, else empty, blank, a control character, a lone surrogate, or not a string.
def mostly(usual, unusual, odds: int = 4):
    """`usual` about `odds` times in `odds` + 1 (hypothesis's one_of does not weigh its branches)."""
    return st.sampled_from([True] * odds + [False]).flatmap(lambda take: usual if take else unusual)


# Item text: usually valid, else empty, blank, a control character, a lone surrogate, or not a string.
item_texts = mostly(
    st.sampled_from(VALID_TEXT),
    st.one_of(st.sampled_from(["", " ", "\t\n", "\x00", "\ud800", "ok\udfff", "\u200b"]), texts, scalars),
    odds=9,
)


def bounds_values(key: str):
    kind, low, high = PARAMETER_SPECS[key]
    if kind is bool:
        return st.sampled_from([True, False, 0, 1, "true"])
    return st.sampled_from([low - 1, low, low + 1, high - 1, high, high + 1, float(low), True])


@st.composite
def parameter_objects(draw) -> dict:
    names = draw(st.lists(st.sampled_from(sorted(PARAMETER_SPECS)), unique=True, max_size=4))
    params = {name: draw(mostly(bounds_values(name), json_values, odds=3)) for name in names}
    if draw(st.sampled_from(range(8))) == 0:
        params[draw(st.sampled_from(["topk", "TOP_K", "batch_size", ""]))] = 1
    return params


@st.composite
def items(draw) -> dict:
    item = {"question": draw(item_texts), "context": draw(item_texts)}
    change = draw(st.sampled_from(range(20)))
    if change == 0:
        del item[draw(st.sampled_from(["question", "context"]))]
    elif change == 1:
        item[draw(keys)] = draw(scalars)
    return item


@st.composite
def near_valid_documents(draw):
    """The four shapes of docs/contract.md#requests with random items and parameter values."""
    params = draw(mostly(st.none() | parameter_objects(), json_values))
    listed = st.lists(items(), min_size=0, max_size=4)
    shape = draw(st.sampled_from(["inputs-object", "inputs-list", "plain", "list"]))
    if shape == "inputs-object":
        document = {"inputs": draw(items())}
    elif shape == "inputs-list":
        document = {"inputs": draw(listed)}
    elif shape == "plain":
        document = dict(draw(items()))
    else:
        return draw(listed)
    if draw(st.booleans()):
        document["parameters"] = params
    return document


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


@st.composite
def csv_texts(draw) -> str:
    header = draw(
        st.one_of(
            st.just(["question", "context"]),
            st.just([" Context ", "QUESTION"]),
            st.lists(st.sampled_from(["question", "context", "answer", ""]), max_size=3),
        )
    )
    cell = st.one_of(st.sampled_from(VALID_TEXT), texts)
    rows = draw(
        st.lists(st.lists(cell, min_size=max(len(header) - 1, 0), max_size=len(header) + 1), max_size=4)
    )
    return csv_text([header, *rows])


@st.composite
def bodies_for(draw, media_type: str | None) -> str:
    canonical = MEDIA_TYPE_ALIASES.get(split_media_type(media_type)[0] or "application/json")
    if canonical == "text/csv":
        return draw(csv_texts())
    if canonical == "application/jsonlines":
        lines = draw(st.lists(json_texts(), max_size=4))
        return draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))
    return draw(json_texts())


# ---- the properties ------------------------------------------------------------------------------


@bounded(300)
@given(body=st.binary(max_size=200), content_type=content_types())
@example(body=b"", content_type=None)
@example(body=b"\xef\xbb\xbf", content_type="application/json")
@example(body=b"\xff\xfe{\x00}\x00", content_type="application/json; charset=utf-16")
@example(body=b"question,context\n\x00,\x00", content_type="text/csv")
def test_arbitrary_bytes_under_any_content_type(body, content_type):
    outcome(lambda: parse_request(body, content_type, max_items=MAX_ITEMS))


@bounded(300)
@given(data=st.data(), content_type=supported_content_types)
def test_encoded_documents_under_supported_types(data, content_type):
    """JSON, jsonlines and CSV text (arbitrary, near-valid, truncated, with NaN tokens, lone
    surrogates), encoded in the charset the header names (or UTF-8)."""
    text = data.draw(bodies_for(content_type))
    charset = split_media_type(content_type)[1].get("charset") or "utf-8"
    try:
        body = encode(text, charset)
    except (LookupError, UnicodeError, ValueError):
        body = text.encode("utf-8", "surrogatepass")
    outcome(lambda: parse_request(body, content_type, max_items=MAX_ITEMS))


@bounded(300)
@given(value=json_values)
@example(value=float("nan"))
@example(value={"inputs": {"question": "q", "context": "c"}, "parameters": {"top_k": 10**4000}})
@example(value={"question": "\ud800", "context": "c"})
def test_arbitrary_json_documents(value):
    text = dumps(value)
    outcome(lambda: parse_request(text.encode(), "application/json", max_items=MAX_ITEMS))
    outcome(
        lambda: parse_request((text + "\n" + text).encode(), "application/jsonlines", max_items=MAX_ITEMS)
    )


@bounded(300)
@given(value=json_values)
@example(value={"inputs": [{"question": "q", "context": "c"}] * (MAX_ITEMS + 1)})
@example(value={"question": "q", "context": "c", "parameters": {"max_seq_len": 10, "doc_stride": 10}})
def test_request_from_object_on_arbitrary_json_values(value):
    outcome(lambda: request_from_object(value, max_items=MAX_ITEMS))


def parameters_are_valid(params) -> bool:
    """PARAMETER_SPECS read independently of the parser: the oracle for parameter objects."""
    if params is None:
        return True
    if not isinstance(params, dict) or any(key not in PARAMETER_SPECS for key in params):
        return False
    for key, value in params.items():
        if value is None:
            continue
        kind, low, high = PARAMETER_SPECS[key]
        if kind is bool:
            if type(value) is not bool:
                return False
        elif type(value) is not int or not low <= value <= high:
            return False
    stride, seq = params.get("doc_stride"), params.get("max_seq_len")
    return stride is None or seq is None or stride < seq


def item_is_valid(item) -> bool:
    if not isinstance(item, dict) or set(item) != {"question", "context"}:
        return False
    for text in item.values():
        if not isinstance(text, str) or not text.strip():
            return False
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


@bounded(300)
@given(
    document=near_valid_documents(),
    content_type=st.sampled_from(["application/json", "application/jsonlines"]),
)
@example(
    document={"question": "q", "context": "c", "parameters": {"top_k": True}}, content_type="application/json"
)
@example(
    document={"question": "q", "context": "c", "parameters": {"top_k": 2.0}}, content_type="application/json"
)
@example(
    document={"inputs": {"question": "q", "context": "c"}, "parameters": {"max_seq_len": 8, "doc_stride": 7}},
    content_type="application/json",
)
def test_near_valid_requests_are_accepted_exactly_when_valid(document, content_type):
    """A valid shape with random items and parameter values: parsed iff every item and parameter
    is allowed, and then with the values sent."""
    request = outcome(lambda: parse_request(dumps(document).encode(), content_type, max_items=MAX_ITEMS))
    if isinstance(document, list):
        sent, params = document, None
    elif "inputs" in document:
        sent = document["inputs"] if isinstance(document["inputs"], list) else [document["inputs"]]
        params = document.get("parameters")
    else:
        sent = [{k: v for k, v in document.items() if k != "parameters"}]
        params = document.get("parameters")
    valid = bool(sent) and all(item_is_valid(item) for item in sent) and parameters_are_valid(params)
    assert (request is not None) == valid, (document, request)
    if request is not None:
        (query,) = request.queries
        assert [(i.question, i.context) for i in query.items] == [(s["question"], s["context"]) for s in sent]
        given_values = {k: v for k, v in (params or {}).items() if v is not None}
        assert query.params == QAParams(**given_values)


# ---- round trips ---------------------------------------------------------------------------------

valid_texts = st.one_of(
    st.sampled_from(VALID_TEXT),
    # Any text with a visible character, no lone surrogate; commas, quotes, newlines and NUL included.
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30).filter(str.strip),
)
valid_items = st.fixed_dictionaries({"question": valid_texts, "context": valid_texts})
valid_parameters = st.fixed_dictionaries(
    {},
    optional={
        "top_k": st.integers(1, 100) | st.none(),
        "max_answer_len": st.integers(1, 10000),
        "max_question_len": st.integers(1, 100000),
        "handle_impossible_answer": st.booleans(),
        "align_to_words": st.booleans() | st.none(),
        "max_seq_len": st.integers(400, 512),
        "doc_stride": st.integers(0, 399),
    },
)


@st.composite
def valid_documents(draw) -> tuple[object, int]:
    """(a valid JSON document in one of the four shapes, its number of items)."""
    shape = draw(st.sampled_from(["inputs-object", "inputs-list", "plain", "list"]))
    if shape in ("inputs-object", "plain"):
        item = draw(valid_items)
        document = {"inputs": item} if shape == "inputs-object" else dict(item)
        count = 1
    else:
        listed = draw(st.lists(valid_items, min_size=1, max_size=6))
        document = {"inputs": listed} if shape == "inputs-list" else listed
        count = len(listed)
    if shape != "list" and draw(st.booleans()):
        document["parameters"] = draw(valid_parameters | st.none())
    return document, count


@st.composite
def valid_bodies(draw) -> tuple[bytes, str, int, list[tuple[str, str]]]:
    """(body, content type, items sent, the items in order) of a valid request."""
    media_type = draw(st.sampled_from(sorted(MEDIA_TYPE_ALIASES)))
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=UTF-8", '; charset="utf-8"']))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    canonical = MEDIA_TYPE_ALIASES[media_type]
    if canonical == "text/csv":
        rows = draw(st.lists(valid_items, min_size=1, max_size=8))
        flipped = draw(st.booleans())
        header = [" Context", "QUESTION "] if flipped else ["question", "context"]
        cells = [[r["context"], r["question"]] if flipped else [r["question"], r["context"]] for r in rows]
        text, pairs = csv_text([header, *cells]), [(r["question"], r["context"]) for r in rows]
        count = len(rows)
    else:
        documents = draw(
            st.lists(valid_documents(), min_size=1, max_size=1 if canonical == "application/json" else 5)
        )
        ensure_ascii = draw(st.booleans())
        text = "\n".join(json.dumps(d, ensure_ascii=ensure_ascii) for d, _ in documents) + draw(
            st.sampled_from(["", "\n"])
        )
        count = sum(n for _, n in documents)
        pairs = []
        for document, _ in documents:
            if isinstance(document, list):
                listed = document
            elif "inputs" in document:
                listed = document["inputs"] if isinstance(document["inputs"], list) else [document["inputs"]]
            else:
                listed = [document]
            pairs += [(i["question"], i["context"]) for i in listed]
    return (bom + text).encode("utf-8"), media_type + charset, count, pairs


@bounded(300)
@given(sent=valid_bodies())
def test_valid_requests_keep_every_item(sent):
    body, content_type, count, pairs = sent
    request = parse_request(body, content_type, max_items=MAX_ITEMS)
    assert request.item_count == count
    assert [(i.question, i.context) for q in request.queries for i in q.items] == pairs
    assert request.media_type == MEDIA_TYPE_ALIASES[split_media_type(content_type)[0]]


@bounded(150)
@given(sent=valid_bodies(), max_items=st.integers(1, 40))
def test_item_limit_is_a_413_exactly_past_it(sent, max_items):
    body, content_type, count, _ = sent
    if count <= max_items:
        assert parse_request(body, content_type, max_items=max_items).item_count == count
    else:
        with pytest.raises(RequestTooLarge) as caught:
            parse_request(body, content_type, max_items=max_items)
        assert error_response(caught.value)[0] == 413


# ---- charsets that name no text encoding, and known bugs -----------------------------------------


@pytest.mark.parametrize(
    "charset, body",
    [
        ("base64", b'{"question": "q", "context": "c"}'),
        ("hex", b"7b7d"),
        ("zlib", b"{}"),
        ("rot13", b"{}"),
        ("uu", b"{}"),
        ("bz2", b"{}"),
        ("quopri", b"{}"),
        ("idna", b"xn--"),
        ("punycode", b"abc-9"),
        ("undefined", b"{}"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_charset_naming_a_codec_that_is_not_text_is_a_4xx(charset, body):
    """Each body makes its codec fail other than with UnicodeDecodeError (LookupError from
    bytes.decode for the bytes-to-bytes codecs, a bare UnicodeError for the others)."""
    with pytest.raises(QAError) as caught:
        parse_request(body, f"application/json; charset={charset}", max_items=MAX_ITEMS)
    assert error_response(caught.value)[0] in (400, 415), caught.value.message


@bounded(60)
@given(charset=charset_names, body=st.binary(max_size=20))
def test_any_charset_is_decoded_or_a_4xx(charset, body):
    content_type = f"text/csv; charset={charset}"
    outcome(lambda: parse_request(body, content_type, max_items=MAX_ITEMS))


@pytest.mark.parametrize("charset", ["utf-8\x00", "\x00"])
def test_charset_with_a_nul_is_a_4xx(charset):
    outcome(lambda: parse_request(b"{}", f"application/json; charset={charset}", max_items=MAX_ITEMS))


def _deeply_nested() -> list:
    nested: list = []
    for _ in range(sys.getrecursionlimit() + 100):
        nested = [nested]
    return nested


@pytest.mark.parametrize(
    "key, value",
    [("top_k", 10**5000), ("align_to_words", -(10**4301)), ("max_seq_len", "nested")],
    ids=["int-out-of-range", "int-not-a-boolean", "nested-list"],
)
def test_request_from_object_with_an_unprintable_parameter_value_is_a_400(key, value):
    value = _deeply_nested() if value == "nested" else value
    document = {"inputs": {"question": "q", "context": "c"}, "parameters": {key: value}}
    outcome(lambda: request_from_object(document, max_items=MAX_ITEMS))
