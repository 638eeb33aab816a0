"""transformers 4's `pipeline("question-answering")` for scripts written for the Hugging Face
inference container. transformers removed it in 5.3 (5.23 raises KeyError "The task
question-answering has been removed"); `install()` makes a script's own `from transformers import
pipeline` (also `transformers.pipeline(...)`, `from transformers.pipelines import pipeline`) this
module's `pipeline`, which answers "question-answering" and hands every other task to transformers.

`QuestionAnsweringPipeline` takes every call shape 4.57.6's took (a dict, a list or tuple of dicts
or SquadExample-like objects, a generator, several positional dicts, two positional strings,
`question=`/`context=` strings or lists, `X=`/`data=`) with its parameters (`top_k` and the
deprecated `topk`, `max_answer_len`, `max_seq_len`, `doc_stride`, `max_question_len`,
`handle_impossible_answer`, `align_to_words`; given to `pipeline(...)` they are the defaults), and
returns what 4.57.6 returned: a dict for one answer, else a list; a list of those for several
inputs; a batch of one input unwrapped to its result. The answers are this library's (qa.model and
qa.spans, answer for answer as 4.57.6's), tokenized with the model directory's own tokenizer.json
(qa.tokenizer), never with transformers 5's tokenizer object, which tokenizes several models
differently.

What differs from 4.57.6:
- Input errors are `InputError`, a ValueError and an InvalidRequest (so the server answers 400):
  4.57.6's ValueErrors with its messages, and ours where it raised another type (a TypeError for a
  dict with keys besides question and context), failed inside the tokenizer (a doc_stride it cannot
  cut with) or answered garbage (whitespace-only text). A missing key is `InputKeyError`, a KeyError.
- No "deprecated, will be removed in v5" FutureWarnings for positional inputs, `X=` and `data=`:
  here they keep working. `topk` still warns, as in 4.57.6.
- `batch_size`, `num_workers`, `padding`, `max_question_len` and unknown keywords have no effect
  (4.57.6 ignored unknown keywords and, with fast tokenizers, max_question_len; batching here is
  the library's, which does not change answers). Nor do `top_k` above the server's limit of 100 or
  the server's item and window limits apply: those bound HTTP requests.
- `model` is a local save_pretrained directory (run as this container runs models: qa.loading with
  the QAOptions given to install() or pipeline(options=...)) or a PyTorch QA model object (run as it
  is, on the torch backend); Hub ids are not downloaded. A model object needs no tokenizer when it
  was loaded from a directory (4.57.6 raised TypeError). `device` other than the CPU and `dtype`
  are ignored with a warning. Each directory (or model object) is loaded once per process and
  QAOptions: a script that makes its pipeline per request gets the loaded model again.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import json
import logging
import operator
import os
import sys
import threading
import types
import warnings
import weakref
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from qa.backends import create_backend
from qa.errors import InvalidRequest, ModelLoadError
from qa.loading import QA_HEAD, WARMUP_WIDTHS, load_model, load_windows, read_model_config
from qa.model import QAModel
from qa.options import QAOptions
from qa.plan import LANES
from qa.request import JSON, QAParams, QARequest, request_from_object
from qa.windows import example_inputs

log = logging.getLogger(__name__)

TASK = "question-answering"
# The call parameters 4.57.6's _sanitize_parameters read (max_question_len and padding had no
# effect on fast tokenizers), besides its deprecated `topk`.
INT_PARAMETERS = ("top_k", "max_answer_len", "max_seq_len", "doc_stride")
BOOL_PARAMETERS = ("handle_impossible_answer", "align_to_words")


class InputError(InvalidRequest, ValueError):
    """What 4.57.6 raised as a ValueError (or failed on): a ValueError to the script, a 400 to a client."""


class InputKeyError(InvalidRequest, KeyError):
    """An input dict without 'question' or 'context' (4.57.6's KeyError)."""


class QuestionAnsweringPipeline:
    """transformers 4.57.6's QuestionAnsweringPipeline, answering with a `qa.model.QAModel`.
    Keyword arguments given here are the calls' defaults, as `pipeline(..., top_k=3)` made them."""

    task = TASK

    def __init__(self, qa_model: QAModel, *, model=None, tokenizer=None, **defaults):
        self.qa_model = qa_model
        self.model = model  # as given to pipeline(): a directory or a PyTorch model
        self.tokenizer = tokenizer  # as given; answers never use a tokenizer object
        self.device = torch.device("cpu")
        self._defaults = _parameters(defaults)
        _qa_params(self._defaults)  # 4.57.6 refused top_k=0 when the pipeline was made
        # The pipeline had no limits on items or windows per call: the server's are for HTTP bodies.
        self._options = dataclasses.replace(
            qa_model.options, max_items_per_request=sys.maxsize, max_windows_per_request=sys.maxsize
        )

    def __call__(self, *args, **kwargs):
        inputs = _inputs(args, kwargs)
        params = _qa_params({**self._defaults, **_parameters(kwargs)})
        if isinstance(inputs, types.GeneratorType | Dataset):
            return (self._answer_one(item, params) for item in inputs)  # lazily, as 4.57.6 did
        if isinstance(inputs, dict):
            inputs = [inputs]
        elif isinstance(inputs, Iterable):
            inputs = list(inputs)
        else:
            raise InputError(f"Invalid arguments {kwargs}")
        examples: list = [_example(item) for item in inputs]
        if len(examples) == 1:
            # 4.57.6 unwrapped a batch of one; a dict of question and context lists stayed a list.
            one = examples[0]
            return self._answers(one, params) if isinstance(one, list) else self._answers([one], params)[0]
        if any(isinstance(example, list) for example in examples):
            raise InputError("a dict of question and context lists must be the only input")
        return self._answers(examples, params)

    def _answer_one(self, item, params: QAParams):
        example = _example(item)
        if isinstance(example, list):
            raise InputError("a dict of question and context lists cannot be an item of a generator")
        return self._answers([example], params)[0]

    def _answers(self, pairs: list[tuple], params: QAParams) -> list:
        """One answer (a dict or a list) per (question, context), by the QA library."""
        if not pairs:
            return []
        items = [{"question": question, "context": context} for question, context in pairs]
        try:
            query = request_from_object({"inputs": items}, max_items=len(items)).queries[0]
            request = QARequest(queries=(dataclasses.replace(query, params=params),), media_type=JSON)
            return list(self.qa_model.predict(request, self._options))  # no time budget, as in 4.57.6
        except InvalidRequest as exc:  # a ValueError for the script, as 4.57.6 raised
            raise InputError(exc.message) from exc


def _inputs(args: tuple, kwargs: dict):
    """Where 4.57.6's QuestionAnsweringArgumentHandler found a call's inputs."""
    if args:
        if len(args) == 1:
            return args[0]
        if len(args) == 2 and all(type(arg) is str for arg in args):
            return [{"question": args[0], "context": args[1]}]
        return list(args)
    for key in ("X", "data"):
        if key in kwargs:
            return kwargs[key]
    if "question" in kwargs and "context" in kwargs:
        question, context = kwargs["question"], kwargs["context"]
        if isinstance(question, list) and isinstance(context, str):
            return [{"question": q, "context": context} for q in question]
        if isinstance(question, list) and isinstance(context, list):
            if len(question) != len(context):
                raise InputError("Questions and contexts don't have the same lengths")
            return [{"question": q, "context": c} for q, c in zip(question, context)]
        if isinstance(question, str) and isinstance(context, str):
            return [{"question": question, "context": context}]
        raise InputError("Arguments can't be understood")
    raise InputError(f"Unknown arguments {kwargs}")


def _example(item) -> tuple | list[tuple]:
    """(question, context) of one input, as 4.57.6 normalised it; a dict of lists gives a list of them."""
    if isinstance(item, dict):
        for key in ("question", "context"):
            if key not in item:
                raise InputKeyError("You need to provide a dictionary with keys {question:..., context:...}")
            if item[key] is None:
                raise InputError(f"`{key}` cannot be None")
            if isinstance(item[key], str) and len(item[key]) == 0:
                raise InputError(f"`{key}` cannot be empty")
        extra = [key for key in item if key not in ("question", "context")]
        if extra:
            raise InputError(f"unexpected key(s) {extra}: an input has only 'question' and 'context'")
        question, context = item["question"], item["context"]
        if isinstance(question, list):  # 4.57.6's create_sample zipped them
            if not isinstance(context, list):
                raise InputError("Arguments can't be understood: 'question' is a list, 'context' is not")
            return list(zip(question, context))
        return question, context
    if hasattr(item, "question_text") and hasattr(item, "context_text"):  # a SquadExample
        return item.question_text, item.context_text
    raise InputError(f"{item} argument needs to be of type (SquadExample, dict)")


def _parameters(kwargs: dict) -> dict:
    """The answer parameters among keyword arguments (None: not given), `topk` read as `top_k`."""
    values = {name: kwargs[name] for name in INT_PARAMETERS + BOOL_PARAMETERS if kwargs.get(name) is not None}
    if kwargs.get("topk") is not None and "top_k" not in values:
        warnings.warn("topk parameter is deprecated, use top_k instead", UserWarning, stacklevel=3)
        values["top_k"] = kwargs["topk"]
    return values


def _qa_params(values: dict) -> QAParams:
    """QAParams, checked as 4.57.6 checked them; the windows' lengths are checked by qa.windows."""
    checked: dict = {name: bool(values[name]) for name in BOOL_PARAMETERS if name in values}
    for name in INT_PARAMETERS:
        if name in values:
            try:
                checked[name] = operator.index(values[name])
            except TypeError:
                raise InputError(f"{name} must be an integer, not {values[name]!r}") from None
    for name in ("top_k", "max_answer_len"):
        if checked.get(name, 1) < 1:
            raise InputError(f"{name} parameter should be >= 1 (got {checked[name]})")
    if checked.get("doc_stride", 0) < 0:
        raise InputError(f"doc_stride must be >= 0 (got {checked['doc_stride']})")
    return QAParams(**checked)


# ---- pipeline() -------------------------------------------------------------------------------

_default_options = QAOptions()
_lock = threading.Lock()
_by_directory: dict[tuple, QAModel] = {}
# model object -> {(tokenizer dir, options): QAModel}. The QAModel holds the model (and once used,
# so do its batcher's threads), so an entry lives as long as the process: a script that makes a
# pipeline per request gets the same QAModel each time, not a new one (and threads) per request.
_by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pipeline(
    task=None, model=None, config=None, tokenizer=None, *, options: QAOptions | None = None, **kwargs
):
    """transformers.pipeline: "question-answering" (or no task, and a model with a QA head) gives a
    QuestionAnsweringPipeline; any other task is transformers' own. `options` (default: those given
    to install(), else QAOptions()) say how a model directory is run; `config`, `revision`,
    `use_fast`, `framework`, `trust_remote_code`, `model_kwargs` and such are accepted and unused."""
    if not _is_question_answering(task, model):
        return _transformers_pipeline()(task, model, config=config, tokenizer=tokenizer, **kwargs)
    _warn_ignored(model, kwargs)
    options = options or _default_options
    if model is None:
        raise ModelLoadError(
            "pipeline('question-answering') needs model=: a directory saved with save_pretrained, or a "
            "PyTorch question-answering model"
        )
    if isinstance(model, str | os.PathLike):
        qa_model = _directory_model(Path(model), tokenizer, options)
    else:
        qa_model = _object_model(model, tokenizer, options)
    return QuestionAnsweringPipeline(qa_model, model=model, tokenizer=tokenizer, **kwargs)


def _is_question_answering(task, model) -> bool:
    if task is not None:
        return task == TASK
    if isinstance(model, str | os.PathLike):
        path = Path(model) / "config.json"
        try:
            architectures = json.loads(path.read_text(encoding="utf-8")).get("architectures") or []
        except (OSError, ValueError, AttributeError):
            return False
    else:
        config = getattr(model, "config", None)
        architectures = getattr(config, "architectures", None) or [type(model).__name__]
    return any(QA_HEAD.search(str(name)) for name in architectures)


def _warn_ignored(model, kwargs: dict) -> None:
    device = kwargs.get("device")
    if device is not None and device != -1 and str(device) != "cpu":
        log.warning("pipeline(device=%r): this container answers on the CPU; device is ignored", device)
    model_kwargs = kwargs.get("model_kwargs") or {}
    for name in ("dtype", "torch_dtype"):
        dtype = kwargs.get(name, model_kwargs.get(name))
        if dtype is not None and str(dtype) not in ("auto", "float32", "torch.float32"):
            log.warning(
                "pipeline(%s=%s) is ignored: a model object runs as it is, a directory in the precision "
                "of the options (QA_PRECISION)",
                name,
                dtype,
            )


def _tokenizer_dir(tokenizer, fallbacks: list) -> Path:
    """The directory whose tokenizer.json the model was trained with: `tokenizer` if a path, the
    directory a tokenizer object was loaded from, else the model's own."""
    if tokenizer is None:
        candidates = fallbacks
    elif isinstance(tokenizer, str | os.PathLike):
        candidates = [tokenizer]
    else:
        candidates = [getattr(tokenizer, "name_or_path", None)]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise ModelLoadError(
        f"cannot find the tokenizer's directory (tried {[str(c) for c in candidates if c]}): this container "
        f"tokenizes with the tokenizer.json of a directory saved with save_pretrained, as transformers "
        f"4.57.6 did; pass tokenizer=<that directory>"
    )


def _directory_model(model_dir: Path, tokenizer, options: QAOptions) -> QAModel:
    if not model_dir.is_dir():
        raise ModelLoadError(
            f"model={str(model_dir)!r} is not a directory: this container loads question-answering models "
            f"from a local directory saved with save_pretrained (it does not download Hub models)"
        )
    tokenizer_dir = _tokenizer_dir(tokenizer, [model_dir])
    key = (model_dir.resolve(), tokenizer_dir.resolve(), options)
    with _lock:
        if key not in _by_directory:
            qa_model = load_model(model_dir, options)
            if tokenizer_dir.resolve() != model_dir.resolve():
                windows = load_windows(tokenizer_dir, read_model_config(model_dir), options.graph_cache)
                qa_model = QAModel(windows, options, qa_model.backend, lanes=qa_model.batcher.parallel)
            _by_directory[key] = qa_model
        return _by_directory[key]


def _object_model(model, tokenizer, options: QAOptions) -> QAModel:
    """A PyTorch QA model object, run as it is on the torch backend (fp32), with its directory's tokenizer."""
    if not QA_HEAD.search(type(model).__name__) or not hasattr(model, "config"):
        raise ModelLoadError(
            f"pipeline('question-answering') needs a ...ForQuestionAnswering model, not {type(model).__name__}"
        )
    fallbacks = [getattr(model, "name_or_path", None), getattr(model.config, "_name_or_path", None)]
    tokenizer_dir = _tokenizer_dir(tokenizer, fallbacks)
    key = (tokenizer_dir.resolve(), options)
    with _lock:
        loaded = _by_model.setdefault(model, {})
        if key not in loaded:
            windows = load_windows(tokenizer_dir, model.config.to_dict(), options.graph_cache)
            torch.set_num_threads(options.inference_threads)  # as load_model does
            backend = create_backend(
                "torch",
                "fp32",
                options.inference_threads,
                model=model,
                warmup=lambda names: example_inputs(windows, names, WARMUP_WIDTHS),
            )
            lanes = options.parallel_batches or LANES["torch"]["fp32"]
            loaded[key] = QAModel(windows, options, backend, lanes=lanes)
        return loaded[key]


# ---- install() --------------------------------------------------------------------------------

_originals: dict = {}  # "pipeline": transformers.pipelines.pipeline, once replaced


def install(options: QAOptions | None = None) -> None:
    """Make `transformers.pipeline` and `transformers.pipelines.pipeline` this module's `pipeline`
    (idempotent). `options`: how the model directories scripts name are run (the server's settings).

    transformers' package is a lazy module: the attribute set here is what `from transformers import
    pipeline` finds, without importing transformers.pipelines (2+ s); that module is patched when it
    is imported, or now if it was."""
    global _default_options
    if options is not None:
        _default_options = options
    import transformers

    transformers.pipeline = pipeline
    module = sys.modules.get("transformers.pipelines")
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def _patch(module) -> None:
    if module.pipeline is not pipeline:
        _originals["pipeline"] = module.pipeline
        module.pipeline = pipeline


def _transformers_pipeline():
    """transformers' own pipeline function, for the other tasks."""
    module = importlib.import_module("transformers.pipelines")  # patched as it is imported, if installed
    return _originals.get("pipeline", module.pipeline)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches transformers.pipelines right after it is first executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "transformers.pipelines":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
