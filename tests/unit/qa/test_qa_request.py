"""input_fn: every request form of docs/contract.md#requests and every rejection rule.

Each rejection asserts the HTTP status and that the message names the offending key, item
index, line or row (and the allowed values where there are some).
"""

from __future__ import annotations

import json

import inference
import pytest

from qa.errors import InvalidRequest, QAError, RequestTooLarge, UnsupportedContentType
from qa.request import JSON, JSONLINES, QAParams
from serving.errors import error_response

Q, C = "Who built it?", "The bridge was built by Ada in 1901."
ITEM = {"question": Q, "context": C}


def parse(body, content_type="application/json", context=None):
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    return inference.input_fn(body, content_type, context)


def rejected(body, content_type="application/json", *, status=400, names=(), context=None) -> str:
    with pytest.raises(QAError) as caught:
        parse(body, content_type, context)
    error = caught.value
    assert error_response(error)[0] == status, error.message
    for name in names:
        assert name in error.message, f"{name!r} not named in: {error.message}"
    return error.message


# ---- accepted shapes ---------------------------------------------------------------------------


def test_inputs_object_is_one_unbatched_item():
    request = parse({"inputs": ITEM, "parameters": {"top_k": 2}})
    (query,) = request.queries
    assert not query.batched
    assert [(i.question, i.context) for i in query.items] == [(Q, C)]
    assert query.params == QAParams(top_k=2)


def test_inputs_list_is_a_batch_even_of_one():
    (query,) = parse({"inputs": [ITEM]}).queries
    assert query.batched and len(query.items) == 1


def test_plain_object_and_top_level_list():
    (single,) = parse(ITEM).queries
    assert not single.batched and single.params == QAParams()
    (batch,) = parse([ITEM, ITEM, ITEM]).queries
    assert batch.batched and len(batch.items) == 3


def test_plain_object_may_carry_parameters():
    (query,) = parse({**ITEM, "parameters": {"max_answer_len": 4}}).queries
    assert query.params.max_answer_len == 4


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;Charset=UTF-8",
        'application/json; charset="utf-8"',
    ],
)
def test_json_content_type_spellings(content_type):
    assert parse({"inputs": ITEM}, content_type).media_type == JSON


def test_byte_order_mark_and_declared_charset():
    assert parse("\ufeff" + json.dumps({"inputs": ITEM})).queries[0].items[0].question == Q
    latin = json.dumps({"inputs": {"question": "Qui?", "context": "Café"}}, ensure_ascii=False).encode(
        "latin-1"
    )
    assert parse(latin, "application/json; charset=ISO-8859-1").queries[0].items[0].context == "Café"


def test_null_parameters_mean_defaults():
    (query,) = parse({"inputs": ITEM, "parameters": {"top_k": None, "align_to_words": None}}).queries
    assert query.params == QAParams()
    (query,) = parse({"inputs": ITEM, "parameters": None}).queries
    assert query.params == QAParams()


def test_all_parameters_accepted():
    params = {
        "top_k": 3,
        "max_answer_len": 5,
        "max_seq_len": 128,
        "doc_stride": 32,
        "max_question_len": 16,
        "handle_impossible_answer": True,
        "align_to_words": False,
    }
    (query,) = parse({"inputs": ITEM, "parameters": params}).queries
    assert query.params == QAParams(**params)


def test_jsonlines_one_query_per_line_any_shape():
    lines = [{"inputs": ITEM}, ITEM, {"inputs": [ITEM, ITEM], "parameters": {"top_k": 2}}, [ITEM]]
    body = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    request = parse(body, "application/jsonlines")
    assert request.media_type == JSONLINES and request.line_oriented
    assert [q.batched for q in request.queries] == [False, False, True, True]
    assert request.item_count == 5
    assert parse(json.dumps(ITEM), "application/x-jsonlines; charset=utf-8").item_count == 1


def test_csv_with_header():
    body = 'question,context\n"Who?","Ada built it, in 1901."\r\nWhen?,"multi\nline"\n'
    request = parse(body, "text/csv; charset=utf-8")
    (query,) = request.queries
    assert query.batched
    assert [(i.question, i.context) for i in query.items] == [
        ("Who?", "Ada built it, in 1901."),
        ("When?", "multi\nline"),
    ]
    reordered = parse("Context , QUESTION\nctx,q\n", "text/csv").queries[0].items[0]
    assert (reordered.question, reordered.context) == ("q", "ctx")


# ---- 400: malformed bodies ---------------------------------------------------------------------


def test_malformed_json():
    rejected(b'{"inputs": {"question": "a",', names=("malformed JSON", "line 1"))


def test_invalid_utf8():
    rejected(b'{"inputs": {"question": "\xff\xfe", "context": "x"}}', names=("UTF-8", "offset"))


def test_nan_is_not_json():
    rejected(b'{"inputs": {"question": "a", "context": "b"}, "parameters": {"top_k": NaN}}', names=("NaN",))


def test_deep_nesting_is_a_bad_request_not_a_crash():
    rejected(b"[" * 100000 + b"]" * 100000, names=("malformed JSON",))


@pytest.mark.parametrize("body", [b"", b"   \n"])
def test_empty_body(body):
    rejected(body, names=("empty",))


@pytest.mark.parametrize("body", ["just text", 42, None, True])
def test_body_of_the_wrong_type(body):
    rejected(json.dumps(body), names=("inputs",))


def test_object_without_inputs_or_question():
    rejected({"foo": 1}, names=("inputs", "'foo'"))


@pytest.mark.parametrize("inputs", ["text", 3, None])
def test_inputs_of_the_wrong_type(inputs):
    rejected({"inputs": inputs}, names=("'inputs'",))


def test_lone_surrogate_is_invalid_text():
    rejected(b'{"inputs": {"question": "a\\ud800", "context": "b"}}', names=("inputs.question", "surrogate"))


# ---- 400: question / context ---------------------------------------------------------------------


@pytest.mark.parametrize("key", ["question", "context"])
def test_missing_field(key):
    item = {k: v for k, v in ITEM.items() if k != key}
    rejected({"inputs": item}, names=(f"inputs.{key}", "missing"))
    rejected(item, names=(f"body.{key}",) if key == "context" else ("question",))


@pytest.mark.parametrize("key", ["question", "context"])
@pytest.mark.parametrize("value", ["", "   ", "\t\n \u3000"])
def test_empty_or_whitespace_only(key, value):
    rejected({"inputs": {**ITEM, key: value}}, names=(f"inputs.{key}", "empty"))


@pytest.mark.parametrize("key", ["question", "context"])
@pytest.mark.parametrize("value", [3, None, ["a", "b"], {"text": "a"}, True])
def test_not_a_string(key, value):
    rejected({"inputs": {**ITEM, key: value}}, names=(f"inputs.{key}", "string"))


def test_item_not_an_object():
    rejected({"inputs": [ITEM, "Who? Ada."]}, names=("inputs[1]", "object"))
    rejected([ITEM, ITEM, 7], names=("body[2]",))


def test_batch_with_one_invalid_item_is_rejected_whole_naming_its_index():
    items = [ITEM, ITEM, {**ITEM, "context": " "}, ITEM]
    rejected({"inputs": items}, names=("inputs[2].context",))
    rejected(items, names=("body[2].context",))


@pytest.mark.parametrize("body", [[], {"inputs": []}])
def test_empty_batch(body):
    rejected(body, names=("empty",))


# ---- 400: unknown keys -------------------------------------------------------------------------------


def test_unknown_top_level_key():
    rejected({"inputs": ITEM, "parameter": {"top_k": 2}}, names=("'parameter'", "top level", "parameters"))
    rejected({**ITEM, "top_k": 2}, names=("'top_k'",))


def test_unknown_item_key_names_index():
    rejected({"inputs": [ITEM, {**ITEM, "id": 7}]}, names=("inputs[1]", "'id'"))


def test_unknown_parameter():
    rejected(
        {"inputs": ITEM, "parameters": {"top_k": 1, "temperature": 0.5}}, names=("'temperature'", "top_k")
    )


def test_deprecated_topk_gets_a_hint():
    rejected({"inputs": ITEM, "parameters": {"topk": 2}}, names=("'topk'", "did you mean 'top_k'"))


def test_parameters_not_an_object():
    rejected({"inputs": ITEM, "parameters": [1]}, names=("'parameters'", "object"))


# ---- 400: parameter types and ranges --------------------------------------------------------


INT_PARAMS = ["top_k", "max_answer_len", "max_seq_len", "doc_stride", "max_question_len"]


@pytest.mark.parametrize("key", INT_PARAMS)
@pytest.mark.parametrize("value", [True, False, 2.5, 3.0, "3", [3], {"v": 3}])
def test_integer_parameters_reject_other_types(key, value):
    rejected({"inputs": ITEM, "parameters": {key: value}}, names=(f"parameters.{key}", "integer"))


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("top_k", 0, "between 1 and 100"),
        ("top_k", 101, "between 1 and 100"),
        ("top_k", -1, "1"),
        ("max_answer_len", 0, "between 1 and"),
        ("max_seq_len", 0, "between 1 and"),
        ("doc_stride", -1, "between 0 and"),
        ("max_question_len", 0, "between 1 and"),
        ("max_answer_len", 10**30, "between 1 and"),
    ],
)
def test_integer_parameters_out_of_range(key, value, allowed):
    rejected(
        {"inputs": ITEM, "parameters": {key: value}}, names=(f"parameters.{key}", "out of range", allowed)
    )


@pytest.mark.parametrize("key", ["handle_impossible_answer", "align_to_words"])
@pytest.mark.parametrize("value", [1, 0, "true", "false", 1.0])
def test_boolean_parameters_reject_other_types(key, value):
    rejected({"inputs": ITEM, "parameters": {key: value}}, names=(f"parameters.{key}", "true or false"))


@pytest.mark.parametrize("stride", [64, 65, 1000])
def test_doc_stride_must_be_below_max_seq_len(stride):
    rejected(
        {"inputs": ITEM, "parameters": {"max_seq_len": 64, "doc_stride": stride}},
        names=("doc_stride", "max_seq_len=64", "below"),
    )


# ---- content types, charsets, limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_unsupported_content_type_is_415_naming_the_supported_ones(content_type):
    message = rejected({"inputs": ITEM}, content_type, status=415, names=("application/json",))
    assert "application/jsonlines" in message and "text/csv" in message
    with pytest.raises(UnsupportedContentType):
        parse({"inputs": ITEM}, content_type)


def test_unknown_charset_is_415():
    rejected({"inputs": ITEM}, "application/json; charset=klingon", status=415, names=("klingon", "UTF-8"))


def test_too_many_items_is_413_naming_the_limit(make_context):
    context = make_context(max_items_per_request=3)
    assert parse([ITEM] * 3, context=context).item_count == 3
    for body in ([ITEM] * 4, {"inputs": [ITEM] * 4}):
        rejected(body, status=413, names=("4", "3", "QA_MAX_ITEMS_PER_REQUEST"), context=context)
    lines = "\n".join(json.dumps({"inputs": [ITEM, ITEM]}) for _ in range(2))
    rejected(lines, "application/jsonlines", status=413, names=("QA_MAX_ITEMS_PER_REQUEST",), context=context)
    csv_body = "question,context\n" + "q,c\n" * 4
    rejected(csv_body, "text/csv", status=413, names=("QA_MAX_ITEMS_PER_REQUEST",), context=context)
    with pytest.raises(RequestTooLarge):
        parse([ITEM] * 4, context=context)


# ---- jsonlines and CSV errors name the line / row -------------------------------------------------------


def test_jsonlines_errors_name_the_line():
    good = json.dumps({"inputs": ITEM})
    rejected(f"{good}\n{{not json\n", "application/jsonlines", names=("line 2", "malformed JSON"))
    bad_item = json.dumps({"inputs": [ITEM, {"question": Q}]})
    rejected(f"{good}\n{good}\n{bad_item}\n", "application/jsonlines", names=("line 3", "inputs[1].context"))
    bad_param = json.dumps({"inputs": ITEM, "parameters": {"top_k": True}})
    rejected(f"{bad_param}\n", "application/jsonlines", names=("line 1", "parameters.top_k"))


@pytest.mark.parametrize("body", [b"", b"\n\n  \n"])
def test_jsonlines_without_records(body):
    rejected(body, "application/jsonlines", names=("no records",))


def test_csv_errors():
    rejected("", "text/csv", names=("empty",))
    rejected("question,context\n", "text/csv", names=("no rows", "empty"))
    rejected("question,text\nq,c\n", "text/csv", names=("'question'", "'context'"))
    rejected("question,context,id\nq,c,1\n", "text/csv", names=("'question'", "'context'"))
    rejected("question,context\nq,c\nq2\n", "text/csv", names=("row 2", "fields"))
    rejected("question,context\nq,c\nq2,  \n", "text/csv", names=("row 2.context", "empty"))
    rejected(b"question,context\nq,\xff\n", "text/csv", names=("UTF-8",))


def test_errors_are_bad_request_type():
    with pytest.raises(InvalidRequest):
        parse({"inputs": {"question": Q}})
