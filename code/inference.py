"""SageMaker handler hooks for extractive question answering: the file a user copies and edits.

    model_fn(model_dir, context=None)                  -> QAModel
    input_fn(request_body, content_type, context=None) -> QARequest
    predict_fn(data, model, context=None)              -> the pipeline's answer shapes
                                                          (a user's own model: called as the
                                                          Hugging Face toolkit calls it)
    output_fn(prediction, accept, context=None)        -> (body bytes, content type)

The work is done by the `qa` package (no web framework there); these hooks only wire it up. The
serving runtime, the tests and users call them directly. `context.settings` (the serving layer's
`Settings`) supplies the options, as `settings.qa`; without a context the defaults apply. A
user's own `<model_dir>/code/inference.py` may replace any hook; predict_fn also accepts an
already decoded JSON document, and output_fn any JSON-serialisable prediction, so hooks mix and
match. Errors are `qa.errors` types; the serving layer gives each its HTTP status (docs/contract.md).

Behaviour worth knowing (README material):
- Answers are those of transformers 4.57.6's QuestionAnsweringPipeline (qa/spans.py), including
  its defaults: max_seq_len = min(tokenizer max length, 384), doc_stride = min(max_seq_len // 2,
  128), and `max_question_len`, which is validated but has no effect with a fast tokenizer.
  One difference: a list in always gives a list out, even of one item.
- A jsonlines request without Accept (or with */*) is answered in jsonlines, one line per input
  line: Batch Transform joins output lines, so a JSON array would misalign records. JSON and CSV
  requests are answered in JSON.
- A null parameter means its default. Bounds: top_k 1-100, max_answer_len 1-10000, max_seq_len
  up to the model's positions. Items per request (QA_MAX_ITEMS_PER_REQUEST) and model windows per
  request (QA_MAX_WINDOWS_PER_REQUEST) over their limits are 413s.
"""

from __future__ import annotations

from pathlib import Path

from qa.loading import load_model
from qa.model import QAModel
from qa.options import QAOptions
from qa.request import JSONLINES, MEDIA_TYPE_ALIASES, parse_request, request_from_object, split_media_type
from qa.response import encode_response

_DEFAULT_OPTIONS = QAOptions()
STREAMED_MAX_ITEMS = 100_000_000  # bounded by the payload limit, not by a count


def _options(context) -> QAOptions:
    options = getattr(getattr(context, "settings", None), "qa", None)
    return options if isinstance(options, QAOptions) else _DEFAULT_OPTIONS


def model_fn(model_dir, context=None) -> QAModel:
    return load_model(Path(model_dir), _options(context))


def input_fn(request_body, content_type, context=None):
    options = _options(context)
    # A Batch Transform mini-batch holds as many records as its payload (qa/model.py streams them).
    streamed = (
        options.batch_transform and MEDIA_TYPE_ALIASES.get(split_media_type(content_type)[0]) == JSONLINES
    )
    return parse_request(
        request_body,
        content_type,
        max_items=STREAMED_MAX_ITEMS if streamed else options.max_items_per_request,
        per_record=options.jsonlines_errors == "record",
    )


def predict_fn(data, model, context=None):
    if not isinstance(model, QAModel):
        # A user's model_fn returned its own model (a pipeline, say): call it as the Hugging Face
        # toolkit's default predict_fn does, with the decoded request's inputs and parameters.
        inputs = data.pop("inputs", data)
        parameters = data.pop("parameters", None)
        return model(inputs) if parameters is None else model(inputs, **parameters)
    options = _options(context) if context is not None else model.options
    request = request_from_object(data, max_items=options.max_items_per_request)
    return model.predict(request, options, deadline=getattr(context, "deadline", None))


def output_fn(prediction, accept, context=None) -> tuple[bytes, str]:
    body, content_type = encode_response(prediction, accept)
    if _options(context).batch_transform and content_type == JSONLINES:
        # SageMaker ends each mini-batch's output with a newline of its own (AssembleWith=Line):
        # one more would leave an empty line between mini-batches.
        body = body.removesuffix(b"\n")
    return body, content_type
