"""SageMaker handler hooks for extractive question answering (CONTRACT §2).

    model_fn(model_dir, context=None)                -> QAModel
    input_fn(request_body, content_type, context=None) -> QARequest
    predict_fn(data, model, context=None)           -> the pipeline's answer shapes
    output_fn(prediction, accept, context=None)     -> (body bytes, content type)

No web framework here: the serving runtime, the tests and users call these directly. Errors are
`serving.errors` types carrying their HTTP status. `context.settings` (a `Settings`) supplies
the limits; without a context the `Settings()` defaults apply. A user's own
`<model_dir>/code/inference.py` may replace any hook; predict_fn also accepts an already decoded
JSON document, and output_fn any JSON-serialisable prediction, so hooks mix and match.

Behaviour worth knowing (README material):
- Answers are those of transformers 4.57.6's QuestionAnsweringPipeline (qa_spans.py), including
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

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the sibling qa_* modules, when loaded by file path
    sys.path.insert(0, _HERE)

from qa_model import QAModel, load_model  # noqa: E402
from qa_request import parse_request, request_from_object  # noqa: E402
from qa_response import encode_response  # noqa: E402

from serving.settings import Settings  # noqa: E402

_DEFAULT_SETTINGS = Settings()


def _settings(context) -> Settings:
    settings = getattr(context, "settings", None)
    return settings if isinstance(settings, Settings) else _DEFAULT_SETTINGS


def model_fn(model_dir, context=None) -> QAModel:
    return load_model(Path(model_dir), _settings(context))


def input_fn(request_body, content_type, context=None):
    return parse_request(request_body, content_type, max_items=_settings(context).max_items_per_request)


def predict_fn(data, model: QAModel, context=None):
    settings = _settings(context) if context is not None else model.settings
    request = request_from_object(data, max_items=settings.max_items_per_request)
    return model.predict(request, settings, deadline=getattr(context, "deadline", None))


def output_fn(prediction, accept, context=None) -> tuple[bytes, str]:
    return encode_response(prediction, accept)
