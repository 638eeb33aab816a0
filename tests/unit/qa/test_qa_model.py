"""predict_fn: response shapes, the checks that need the tokenizer, work bounds, batching, threads."""

from __future__ import annotations

import json
import threading
import types

import inference
import pytest
import torch
from golden_cases import load_probes

from qa.errors import InvalidRequest, QAError, RequestTooLarge
from qa.request import BatchResults
from serving.errors import error_response

CONTEXT = (
    "The port of Valmont was founded in 1642 by a group of fishermen from the northern coast. "
    "The first stone lighthouse, designed by the engineer Matthias Oort, was completed in 1711."
)
ITEM = {"question": "Who designed the lighthouse?", "context": CONTEXT}
LONG_CONTEXT = " ".join([CONTEXT] * 40)  # about 1,500 tokens: several windows


def predict(model, body, context=None, content_type="application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return inference.predict_fn(inference.input_fn(raw, content_type, context), model, context)


def rejected(model, body, *, status=400, names=(), context=None) -> str:
    with pytest.raises(QAError) as caught:
        predict(model, body, context)
    assert error_response(caught.value)[0] == status, caught.value.message
    for name in names:
        assert name in caught.value.message, f"{name!r} not named in: {caught.value.message}"
    return caught.value.message


def is_answer(value) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"score", "start", "end", "answer"}
        and isinstance(value["score"], float)
        and isinstance(value["start"], int)
        and isinstance(value["end"], int)
        and isinstance(value["answer"], str)
    )


# ---- response shapes (the pipeline's, except that a list in always gives a list out) --------------


def test_one_input_top_k_1_is_a_dict_with_offsets_into_the_context(qa_model):
    answer = predict(qa_model, {"inputs": ITEM})
    assert is_answer(answer)
    assert CONTEXT[answer["start"] : answer["end"]] == answer["answer"]
    assert predict(qa_model, ITEM) == answer


def test_top_k_gives_a_list_best_first(qa_model):
    answers = predict(qa_model, {"inputs": ITEM, "parameters": {"top_k": 5}})
    assert isinstance(answers, list) and len(answers) == 5 and all(map(is_answer, answers))
    scores = [a["score"] for a in answers]
    assert scores == sorted(scores, reverse=True)


def test_a_list_of_one_still_gives_a_list(qa_model):
    for body in ({"inputs": [ITEM]}, [ITEM]):
        result = predict(qa_model, body)
        assert isinstance(result, BatchResults) and len(result) == 1 and is_answer(result[0])
    nested = predict(qa_model, {"inputs": [ITEM], "parameters": {"top_k": 3}})
    assert len(nested) == 1 and len(nested[0]) == 3


def test_batch_answers_in_order_equal_single_answers(qa_model):
    items = [ITEM, {"question": "When was the port founded?", "context": LONG_CONTEXT}, ITEM]
    batch = predict(qa_model, {"inputs": items, "parameters": {"top_k": 2}})
    singles = [predict(qa_model, {"inputs": item, "parameters": {"top_k": 2}}) for item in items]
    assert [[(a["answer"], a["start"]) for a in r] for r in batch] == [
        [(a["answer"], a["start"]) for a in r] for r in singles
    ]


def test_no_answer_shape(qa_model):
    answers = predict(
        qa_model, {"inputs": ITEM, "parameters": {"handle_impossible_answer": True, "top_k": 30}}
    )
    empty = [a for a in answers if a["answer"] == ""]
    assert len(empty) == 1 and empty[0]["start"] == 0 and empty[0]["end"] == 0 and 0 <= empty[0]["score"] <= 1


def test_predict_fn_accepts_a_decoded_document_from_a_custom_input_fn(qa_model):
    assert inference.predict_fn({"inputs": ITEM}, qa_model) == predict(qa_model, {"inputs": ITEM})
    with pytest.raises(InvalidRequest, match="inputs.context"):
        inference.predict_fn({"inputs": {"question": "q"}}, qa_model)


# ---- checks that need the tokenizer and the model -----------------------------------------------


def test_max_seq_len_cannot_exceed_the_model_positions(qa_model):
    rejected(qa_model, {"inputs": ITEM, "parameters": {"max_seq_len": 513}}, names=("max_seq_len=513", "512"))
    assert is_answer(predict(qa_model, {"inputs": ITEM, "parameters": {"max_seq_len": 512}}))


def test_max_seq_len_too_small_for_any_window(qa_model):
    rejected(
        qa_model, {"inputs": ITEM, "parameters": {"max_seq_len": 4}}, names=("max_seq_len=4", "between 5")
    )


def test_doc_stride_needs_room_for_special_tokens(qa_model):
    rejected(
        qa_model,
        {"inputs": ITEM, "parameters": {"max_seq_len": 64, "doc_stride": 62}},
        names=("doc_stride=62", "below 62"),
    )
    # only doc_stride given: checked against the default max_seq_len (384)
    rejected(qa_model, {"inputs": ITEM, "parameters": {"doc_stride": 400}}, names=("doc_stride=400", "384"))


def test_doc_stride_larger_than_a_windows_context_room_names_the_item(qa_model):
    items = [ITEM, {"question": "Who designed the lighthouse?", "context": LONG_CONTEXT}]
    rejected(
        qa_model,
        {"inputs": items, "parameters": {"max_seq_len": 64, "doc_stride": 60}},
        names=("inputs[1]", "doc_stride=60", "56"),
    )
    # the same parameters are fine when the context fits in one window (as in the pipeline)
    assert is_answer(
        predict(
            qa_model,
            {
                "inputs": {"question": "Who?", "context": "Ada did."},
                "parameters": {"max_seq_len": 64, "doc_stride": 60},
            },
        )
    )


def test_question_too_long_for_max_seq_len(qa_model):
    question = "what " * 40 + "?"
    rejected(
        qa_model,
        {
            "inputs": [ITEM, {"question": question, "context": CONTEXT}],
            "parameters": {"max_seq_len": 32, "doc_stride": 8},
        },
        names=("inputs[1].question", "too long", "max_seq_len"),
    )


@pytest.mark.parametrize("key", ["question", "context"])
@pytest.mark.parametrize("text", ["\u200b\u200d\ufeff", "\x00\x01\x7f", "\u0301\u0300"])
def test_nothing_left_after_normalisation(qa_model, key, text):
    item = {**ITEM, key: text}
    rejected(qa_model, {"inputs": [ITEM, item]}, names=(f"inputs[1].{key}", "normalisation"))


def test_windows_per_request_are_bounded(qa_model, make_context):
    context = make_context(max_windows_per_request=8)
    body = {"inputs": {"question": "Who?", "context": LONG_CONTEXT}, "parameters": {"max_seq_len": 128}}
    rejected(qa_model, body, status=413, names=("8", "QA_MAX_WINDOWS_PER_REQUEST"), context=context)
    with pytest.raises(RequestTooLarge):
        predict(qa_model, {"inputs": [ITEM] * 9}, context)
    assert len(predict(qa_model, {"inputs": [ITEM] * 8}, context)) == 8


PROBES = load_probes()


@pytest.mark.parametrize("probe", PROBES, ids=[p["id"] for p in PROBES])
def test_inputs_the_reference_pipeline_failed_or_answered_emptily_are_400(probe, qa_model):
    """Each probe crashed the 4.57.6 pipeline or gave a meaningless empty answer: here a clear 400."""
    request = probe["request"]
    named = {k for k in request.get("parameters", {}) if k in probe["id"]} or {
        k for k in ("question", "context") if k in probe["id"]
    }
    message = rejected(qa_model, request)
    assert any(name in message for name in named), message


# ---- batching: padded to the longest window of each batch, never to max_seq_len --------------------


def test_forward_batches_are_bounded_and_padded_to_their_longest_window(
    qa_model_dir, make_context, monkeypatch
):
    # Token and padding budgets that never bind here, one lane (passes in order): this checks
    # forward_batch_size and the padding.
    settings = dict(backend="torch", batch_max_tokens=4096, batch_max_padding_percent=100, parallel_batches=1)
    qa_model = inference.model_fn(qa_model_dir, make_context(**settings))
    shapes = []
    forward = qa_model.model.forward

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(qa_model.model, "forward", spy)
    items = [ITEM, {"question": "Who?", "context": LONG_CONTEXT}, {"question": "Who?", "context": "Ada did."}]
    windows = qa_model.windows.windows_for(
        inference.input_fn(json.dumps({"inputs": items}).encode(), None), 10**6
    )
    lengths = sorted(len(w.input_ids) for item in windows for w in item)
    predict(qa_model, {"inputs": items}, make_context(forward_batch_size=3))
    assert all(rows <= 3 for rows, _ in shapes)
    assert sum(rows for rows, _ in shapes) == len(lengths)
    # windows are sorted by length, so each batch is as wide as its own longest window
    expected_widths = [max(lengths[i : i + 3]) for i in range(0, len(lengths), 3)]
    assert [width for _, width in shapes] == expected_widths
    assert min(width for _, width in shapes) < 384


@pytest.mark.parametrize("precision,batched", [("fp32", True), ("int8", False)])
def test_onnx_int8_runs_one_window_per_pass(qa_model_dir, make_context, tmp_path, precision, batched):
    """Dynamic int8's activation scales span the whole pass: batched, a window's answer would depend
    on its neighbours. fp32 batches (its logits do not depend on them)."""
    context = make_context(backend="onnx", precision=precision, graph_cache_dir=tmp_path, inference_threads=1)
    qa_model = inference.model_fn(qa_model_dir, context)
    rows = []
    forward = qa_model.backend.forward

    def spy(inputs, alone=False):
        rows.append(len(inputs["input_ids"]))
        return forward(inputs, alone)

    qa_model.backend.forward = spy
    items = [{"question": "Who?", "context": LONG_CONTEXT}]
    predict(qa_model, {"inputs": items}, context)
    assert sum(rows) > 1
    assert (max(rows) > 1) == batched, rows


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_reduced_precision_answers_do_not_depend_on_the_batch(
    qa_model_dir, make_context, tmp_path, precision
):
    """OpenVINO int8 and bf16 round: a window's logits change with the width it is padded to, so
    windows are padded to fixed widths and batched only at one width. The same request alone and
    inside a mixed batch gets the same answer; and mixed batches did form."""
    context = make_context(
        backend="openvino", precision=precision, graph_cache_dir=tmp_path, inference_threads=1
    )
    qa_model = inference.model_fn(qa_model_dir, context)
    passes = []
    forward = qa_model.backend.forward

    def spy(inputs, alone=False):
        passes.append(inputs["input_ids"].shape)
        return forward(inputs, alone)

    qa_model.backend.forward = spy
    target = {"question": "Who designed the lighthouse?", "context": CONTEXT}
    alone = predict(qa_model, {"inputs": target, "parameters": {"top_k": 3}}, context)
    assert passes == [(1, passes[0][1])] and passes[0][1] % 16 == 0
    # Neighbours of other lengths, some padded to the target's width and some not.
    words = CONTEXT.split()
    neighbours = [
        {"question": "Who?", "context": " ".join(words[: len(words) - cut])} for cut in (1, 3, 9, 20)
    ]
    neighbours.append({"question": "When was the port founded?", "context": LONG_CONTEXT})
    passes.clear()
    mixed = predict(qa_model, {"inputs": [*neighbours, target], "parameters": {"top_k": 3}}, context)[-1]
    assert max(rows for rows, _ in passes) > 1, passes
    assert all(width % 16 == 0 for _, width in passes), passes
    assert [(a["answer"], a["start"], a["end"]) for a in mixed] == [
        (a["answer"], a["start"], a["end"]) for a in alone
    ]
    for got, want in zip(mixed, alone):
        assert got["score"] == pytest.approx(want["score"], abs=1e-3)


def test_inference_runs_without_autograd(qa_model, monkeypatch):
    seen = []
    forward = qa_model.model.forward

    def spy(*args, **kwargs):
        seen.append((torch.is_inference_mode_enabled(), qa_model.model.training))
        return forward(*args, **kwargs)

    monkeypatch.setattr(qa_model.model, "forward", spy)
    predict(qa_model, {"inputs": ITEM})
    assert seen == [(True, False)]


def test_concurrent_requests_get_the_answers_they_would_get_alone(qa_model):
    bodies = [{"inputs": ITEM, "parameters": {"top_k": k}} for k in (1, 2, 3)] + [
        {"inputs": {"question": "Who?", "context": LONG_CONTEXT}, "parameters": {"max_seq_len": 96}}
    ]
    expected = [predict(qa_model, body) for body in bodies]
    results: dict[tuple[int, int], object] = {}
    errors = []

    def worker(thread: int):
        try:
            for round_ in range(3):
                index = (thread + round_) % len(bodies)
                results[(thread, round_)] = (index, predict(qa_model, bodies[index]))
        except Exception as exc:  # reported below with the thread number
            errors.append((thread, exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert len(results) == 18
    for index, result in results.values():
        assert json.dumps(result) == json.dumps(expected[index])


def test_a_bad_request_does_not_change_later_answers(qa_model):
    before = predict(qa_model, {"inputs": ITEM})
    with pytest.raises(InvalidRequest):
        predict(qa_model, {"inputs": ITEM, "parameters": {"max_seq_len": 64, "doc_stride": 62}})
    with pytest.raises(InvalidRequest):
        predict(
            qa_model,
            {
                "inputs": {"question": "Who?", "context": LONG_CONTEXT},
                "parameters": {"max_seq_len": 64, "doc_stride": 60},
            },
        )
    assert predict(qa_model, {"inputs": ITEM}) == before


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"max_seq_len": 64},
        {"max_seq_len": 64, "doc_stride": 0},
        {"max_seq_len": 100, "doc_stride": 60},
        {"max_seq_len": 512, "doc_stride": 256},
    ],
)
def test_the_window_bound_counts_exactly_the_windows_the_tokenizer_makes(qa_model, make_context, params):
    items = [
        {"question": "Who?", "context": LONG_CONTEXT},
        ITEM,
        {"question": "Who?", "context": LONG_CONTEXT[:900]},
    ]
    body = {"inputs": items, "parameters": params}
    windows = qa_model.windows.windows_for(inference.input_fn(json.dumps(body).encode(), None), 10**6)
    count = sum(len(w) for w in windows)
    assert count > len(items)
    assert len(predict(qa_model, body, make_context(max_windows_per_request=count))) == 3
    rejected(
        qa_model,
        body,
        status=413,
        names=("QA_MAX_WINDOWS_PER_REQUEST",),
        context=make_context(max_windows_per_request=count - 1),
    )


def test_a_context_first_tokenizer_is_served(qa_model_dir, tmp_path):
    import shutil

    target = tmp_path / "left"
    shutil.copytree(qa_model_dir, target)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config["padding_side"] = "left"
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    model = inference.model_fn(target)
    assert not model.windows.question_first
    answers = predict(
        model,
        {
            "inputs": {"question": "Who?", "context": LONG_CONTEXT},
            "parameters": {"top_k": 3, "max_seq_len": 96},
        },
    )
    assert len(answers) == 3 and all(a["answer"] == LONG_CONTEXT[a["start"] : a["end"]] for a in answers)


def test_long_texts_are_counted_in_pieces_up_to_the_cap(qa_model):
    from qa.windows import LONG_TEXT_CHARS, split_at_whitespace

    text = (LONG_CONTEXT + " \u00e9t\u00e9\tCaf\u00e9\n") * 30
    assert len(text) > 10 * LONG_TEXT_CHARS
    pieces = split_at_whitespace(text, LONG_TEXT_CHARS)
    assert "".join(pieces) == text and len(pieces) > 2
    assert all(p[:1].isspace() for p in pieces[1:])
    exact = len(qa_model.windows._counter.encode(text, add_special_tokens=False).ids)
    # Counted whole only when the cap is crossed by the last piece; a text within the cap: 0.
    assert qa_model.windows.tokens_over(text, cap=exact - 1) == exact
    assert qa_model.windows.tokens_over(text, cap=exact) == 0
    assert exact > qa_model.windows.tokens_over(text, cap=100) > 100


def test_a_huge_context_is_rejected_by_the_window_bound(qa_model):
    huge = LONG_CONTEXT * 300  # about 2.7 MB
    rejected(
        qa_model,
        {"inputs": {"question": "Who?", "context": huge}},
        status=413,
        names=("QA_MAX_WINDOWS_PER_REQUEST",),
    )


@pytest.mark.parametrize("name", ["distilbert-tiny-s0", "roberta-tiny", "xlnet-tiny"])
def test_each_text_is_tokenized_once_into_the_windows_the_tokenizer_cuts(name, tmp_path):
    """The windows cut from one tokenization of each pair equal the tokenizer's own encoding of
    the pair with truncation, token for token, type ids, offsets, sequence ids and words: for a
    question-first and a context-first tokenizer, for sequences shorter, longer and as long as
    each other, down to one token each."""
    import tokenizers
    from golden_cases import model_dir

    from qa.loading import load_windows, read_model_config

    directory = model_dir(name)
    windows = load_windows(directory, read_model_config(directory), tmp_path)
    reference = tokenizers.Tokenizer.from_str(windows.tokenizer_json())
    calls = []
    windows._counter = _Counting(windows._counter, calls)

    def parts(encoding):
        return [
            (
                e.ids,
                e.type_ids,
                e.attention_mask,
                e.offsets,
                e.sequence_ids,
                e.word_ids,
                e.special_tokens_mask,
            )
            for e in [encoding, *encoding.overflowing]
        ]

    pairs = [
        ("a", "b"),
        ("Who?", "Ada did."),
        ("ab cd", "ef gh"),
        ("Who designed the lighthouse?", LONG_CONTEXT),
    ]
    pairs += [(LONG_CONTEXT[:300], "Oort."), (CONTEXT, CONTEXT)]
    for question, context in pairs:
        for max_seq_len, doc_stride in ((384, 128), (64, 16), (40, 0)):
            calls.clear()
            pair, q_tokens, c_tokens = windows._tokens(question, context)
            try:  # what the request would be refused for (the tokenizer cannot cut it)
                windows._plan_windows(ITEM_NAMED, q_tokens, c_tokens, max_seq_len, doc_stride)
            except InvalidRequest:
                continue
            reference.enable_truncation(
                max_seq_len,
                stride=doc_stride,
                strategy="only_second" if windows.question_first else "only_first",
                direction=windows.truncation_side,
            )
            want = reference.encode(*windows._pair(question, context))
            got = windows._cut([windows._split(pair, question, context)], max_seq_len, doc_stride)[0]
            assert parts(got) == parts(want), (name, question[:20], context[:20], max_seq_len)
            assert calls == [1] or (question, context) == ("a", "b"), calls  # one pass over the texts


ITEM_NAMED = types.SimpleNamespace(where="inputs")


class _Counting:
    """A tokenizer that records how many texts each encode_batch call tokenizes."""

    def __init__(self, tokenizer, calls: list):
        self.tokenizer, self.calls = tokenizer, calls

    def encode_batch(self, inputs, **kwargs):
        self.calls.append(len(inputs))
        return self.tokenizer.encode_batch(inputs, **kwargs)
