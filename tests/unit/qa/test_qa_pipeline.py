"""qa/pipeline.py: transformers 4's pipeline("question-answering") for users' scripts, returning
what transformers 4.57.6 returned.

- Every golden case (cases.json, architectures.json: `pipe(inputs, **parameters)` of 4.57.6) called
  the same way on our pipeline made from the model's directory, then from transformers 5.23's model
  and tokenizer objects: same answers and shapes (a batch of one unwrapped, as 4.57.6 did).
- golden/pipeline.json (tests/fixtures/make_golden_pipeline.py, run in the 4.57.6 venv): the other
  call shapes (question=/context=, lists of them, a list of one, topk, X=/data=, SquadExamples, a
  generator, pipeline() defaults, model and tokenizer objects with device=-1) and 4.57.6's errors.
- install(): a script's own `from transformers import pipeline` gets ours; other tasks reach
  transformers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest
from golden_cases import (
    FIXTURES_DIR,
    answers_equal,
    architecture_model_names,
    decode_call_value,
    load_architecture_cases,
    load_cases,
    model_dir,
    model_names,
)
from golden_texts import PARAGRAPHS

from qa import pipeline as qa_pipeline
from qa.errors import InvalidRequest, ModelLoadError
from qa.options import QAOptions
from qa.pipeline import InputError, InputKeyError, QuestionAnsweringPipeline, pipeline
from serving.errors import error_response

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = json.loads((FIXTURES_DIR / "golden" / "pipeline.json").read_text(encoding="utf-8"))
S0 = "distilbert-tiny-s0"
ALL_CASES = load_cases() + load_architecture_cases()
MODELS = sorted({case["model"] for case in ALL_CASES})
assert set(MODELS) == set(model_names()) | set(architecture_model_names())
SENTENCEPIECE = ("xlm-roberta-tiny", "albert-tiny", "deberta-v3-tiny")


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> QAOptions:
    """The exact PyTorch backend, quick to load: for the tests of call shapes and model objects."""
    return QAOptions(backend="torch", graph_cache=tmp_path_factory.mktemp("graphs"))


@pytest.fixture(scope="module")
def default_options(tmp_path_factory) -> QAOptions:
    """What a script's pipeline("question-answering", model=dir) gets: the plan for this CPU
    (OpenVINO or ONNX Runtime graphs; Longformer on PyTorch), graphs made in a temporary cache."""
    return QAOptions(graph_cache=tmp_path_factory.mktemp("graphs"))


def as_called(pipe, request: dict):
    """The golden call: the Hugging Face toolkit's `pipe(inputs, **parameters)`."""
    return pipe(request["inputs"], **request.get("parameters", {}))


def mismatches(pipe, cases: list[dict]) -> list[str]:
    wrong = []
    for case in cases:
        got = as_called(pipe, case["request"])
        if not answers_equal(got, case["expected"]):  # the same shape too: dict, list, list per input
            wrong.append(f"{case['id']}: got {got!r}, expected {case['expected']!r}")
    return wrong


def test_a_batch_of_one_is_unwrapped_and_errors_are_value_errors_and_400s(options):
    pipe = pipeline("question-answering", model=str(model_dir(S0)), options=options)
    case = next(c for c in load_cases() if isinstance(c["request"]["inputs"], dict))
    one = pipe([case["request"]["inputs"]], **case["request"].get("parameters", {}))
    assert answers_equal(one, case["expected"])  # a dict, or a list for top_k > 1: not a list of one
    with pytest.raises(ValueError) as caught:
        pipe(question="   ", context="text")
    assert isinstance(caught.value, InvalidRequest) and error_response(caught.value)[0] == 400


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_golden_case_from_the_model_directory(name, default_options):
    pipe = pipeline(
        "question-answering",
        model=str(model_dir(name)),
        tokenizer=str(model_dir(name)),
        options=default_options,
    )
    assert isinstance(pipe, QuestionAnsweringPipeline)
    cases = [case for case in ALL_CASES if case["model"] == name]
    assert cases and mismatches(pipe, cases) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_golden_case_from_transformers_5_model_and_tokenizer_objects(name, options):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(model_dir(name))
    if name.endswith("-slow-tiny"):
        # The model object alone: its directory (model.name_or_path) gives the tokenizer (and
        # transformers 5.23 cannot load albert-slow-tiny's here: no sentencepiece).
        pipe = pipeline("question-answering", model=model, device=-1, options=options)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir(name))
        pipe = pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1, options=options)
    assert pipe.qa_model.model is model  # that very object computes the logits
    cases = [case for case in ALL_CASES if case["model"] == name]
    assert mismatches(pipe, cases) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", SENTENCEPIECE)
def test_transformers_5_tokenizer_objects_would_have_answered_otherwise(name):
    """The cases above have teeth: for these models transformers 5.23's tokenizer object gives other
    tokens or offsets than the tokenizer the goldens need (qa.tokenizer, tested equal to 4.57.6)."""
    from transformers import AutoTokenizer

    from qa.tokenizer import load_tokenizer

    theirs = AutoTokenizer.from_pretrained(model_dir(name))
    ours = load_tokenizer(model_dir(name)).backend
    differ = 0
    for case in load_architecture_cases(name):
        inputs = case["request"]["inputs"]
        for item in inputs if isinstance(inputs, list) else [inputs]:
            a = theirs(item["question"], item["context"], return_offsets_mapping=True)
            b = ours.encode(item["question"], item["context"])
            differ += a["input_ids"] != b.ids or [tuple(o) for o in a["offset_mapping"]] != b.offsets
    assert differ > 0


def test_a_tokenizer_object_is_only_asked_where_it_came_from(options):
    from transformers import AutoModelForQuestionAnswering

    directory = model_dir("xlm-roberta-tiny")
    model = AutoModelForQuestionAnswering.from_pretrained(directory)
    stand_in = types.SimpleNamespace(name_or_path=str(directory))  # no tokenizing methods at all
    pipe = pipeline("question-answering", model=model, tokenizer=stand_in, options=options)
    for case in GOLDEN["cases"]:
        if case["model"] == "xlm-roberta-tiny" and "expected" in case:
            assert answers_equal(call(pipe, case["call"]), case["expected"]), case["id"]


# ---- golden/pipeline.json: call shapes and errors of 4.57.6 ------------------------------------


def decode(value):
    """make_golden_pipeline.py's markers; $squad (a SquadExample: transformers 5 has none) as an object
    with its two attributes."""
    return decode_call_value(
        value, lambda question, context: types.SimpleNamespace(question_text=question, context_text=context)
    )


def topk_warning(kwargs: dict):
    """4.57.6 warned about `topk` when top_k was not given, and so do we."""
    if kwargs.get("topk") is not None and kwargs.get("top_k") is None:
        return pytest.warns(UserWarning, match="topk parameter is deprecated")
    return contextlib.nullcontext()


def call(pipe, spec: dict):
    kwargs = {key: decode(value) for key, value in spec["kwargs"].items()}
    with topk_warning(kwargs):
        output = pipe(*decode(spec["args"]), **kwargs)
    return list(output) if isinstance(output, types.GeneratorType) else output


def make_pipe(load: str, name: str, init: dict, options: QAOptions):
    """As make_golden_pipeline.make_pipe made 4.57.6's."""
    directory = model_dir(name)
    with topk_warning(init):
        if load == "directory":
            return pipeline(
                "question-answering", model=str(directory), tokenizer=str(directory), options=options, **init
            )
        if load == "directory-alone":
            return pipeline("question-answering", str(directory), options=options, **init)
        assert load == "objects-device-1", load
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        model = AutoModelForQuestionAnswering.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return pipeline(
            "question-answering", model=model, tokenizer=tokenizer, device=-1, options=options, **init
        )


def test_pipeline_json_covers_the_call_shapes():
    ids = {case["id"] for case in GOLDEN["cases"]}
    assert GOLDEN["transformers"] == "4.57.6"
    for needed in (
        "question-context-strings",
        "question-context-lists",
        "question-context-lists-of-one",
        "positional-list-of-one",
        "topk-alias",
        "X-keyword",
        "generator",
        "objects-device-1/question-context-strings",
        "xlm-roberta-tiny/question-context-strings",
        "defaults/question-context-strings",
    ):
        assert needed in ids
    assert set(GOLDEN["loads"]) == {case["load"] for case in GOLDEN["cases"]}


def test_every_call_shape_and_error_as_4_57_6(options):
    pipes: dict[tuple, object] = {}
    wrong = []
    for case in GOLDEN["cases"]:
        key = (case["load"], case["model"], json.dumps(case["init"]))
        if key not in pipes:
            pipes[key] = make_pipe(case["load"], case["model"], case["init"], options)
        pipe = pipes[key]
        if "error" in case:
            kind = {"ValueError": ValueError, "KeyError": KeyError}[case["error"]["type"]]
            with pytest.raises(kind) as caught:
                call(pipe, case["call"])
            assert isinstance(caught.value, InputError | InputKeyError)
            # Our messages are 4.57.6's (one adds the closing parenthesis it lacked).
            assert str(caught.value).startswith(case["error"]["message"]), case["id"]
        elif not answers_equal(got := call(pipe, case["call"]), case["expected"]):
            wrong.append(f"{case['id']}: got {got!r}, expected {case['expected']!r}")
    assert wrong == []


def test_pipeline_defaults_are_checked_when_made(options):
    error = GOLDEN["init_error"]
    with pytest.raises(ValueError, match=error["message"].replace("(", r"\(").replace(")", r"\)")):
        pipeline("question-answering", model=str(model_dir(S0)), options=options, **error["init"])


def test_where_we_differ_from_4_57_6(options):
    """Ours, not 4.57.6's: what it failed on, raised other types for or answered emptily."""
    pipe = pipeline("question-answering", model=str(model_dir(S0)), options=options)
    item = {"question": "Who designed the lighthouse?", "context": PARAGRAPHS["harbour"]}
    with pytest.raises(InputError, match="'id'"):  # 4.57.6: TypeError from create_sample
        pipe({**item, "id": 7})
    with pytest.raises(InputError, match="only whitespace"):  # 4.57.6: {"score": 0.0, "answer": ""}
        pipe(question=item["question"], context=" \n ")
    with pytest.raises(InputError, match="doc_stride"):  # 4.57.6: the tokenizer's error, or its panic
        pipe(item, max_seq_len=16, doc_stride=12)
    many = pipe(question=item["question"], context=item["context"], top_k=150)  # our HTTP limit is 100
    assert isinstance(many, list) and len(many) > 100


def test_a_pipeline_per_request_reuses_the_loaded_model(options):
    """A script that makes its pipeline in predict_fn gets the same QAModel each time, not a new
    model, batcher and threads per request."""
    from transformers import AutoModelForQuestionAnswering

    directory = model_dir(S0)
    model = AutoModelForQuestionAnswering.from_pretrained(directory)
    first = pipeline("question-answering", model=model, tokenizer=str(directory), options=options)
    first(question="Who?", context="Matthias Oort designed the lighthouse.")
    threads = threading.active_count()
    again = [
        pipeline("question-answering", model=model, tokenizer=str(directory), options=options)
        for _ in range(5)
    ]
    assert all(pipe.qa_model is first.qa_model for pipe in again)
    again[-1](question="Who?", context="Matthias Oort designed the lighthouse.")
    assert threading.active_count() == threads
    by_directory = pipeline("question-answering", model=str(directory), options=options)
    assert pipeline("question-answering", model=directory, options=options).qa_model is by_directory.qa_model


def test_no_task_and_a_qa_model_gives_ours_and_gpu_devices_are_ignored(options, caplog):
    with caplog.at_level(logging.WARNING, logger=qa_pipeline.log.name):
        pipe = pipeline(model=str(model_dir(S0)), device=0, options=options)
    assert isinstance(pipe, QuestionAnsweringPipeline)
    assert any("device" in record.getMessage() for record in caplog.records)
    assert isinstance(pipe(question="Who?", context="Matthias Oort designed the lighthouse."), dict)


def test_models_that_cannot_be_served_are_named(options, tmp_path):
    with pytest.raises(ModelLoadError, match="does not download Hub models"):
        pipeline(
            "question-answering", model="distilbert/distilbert-base-cased-distilled-squad", options=options
        )
    with pytest.raises(ModelLoadError, match="needs model="):
        pipeline("question-answering", options=options)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        pipeline(
            "question-answering", model=str(model_dir(S0)), tokenizer=str(tmp_path / "none"), options=options
        )


def test_a_tokenizer_directory_other_than_the_model_directory(options, tmp_path):
    import shutil

    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    for path in model_dir(S0).iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab")):
            shutil.copy(path, tokenizer_dir)
    pipe = pipeline(
        "question-answering", model=str(model_dir(S0)), tokenizer=str(tokenizer_dir), options=options
    )
    case = next(c for c in load_cases() if c["model"] == S0)
    assert answers_equal(as_called(pipe, case["request"]), case["expected"])


# ---- install() ---------------------------------------------------------------------------------


@pytest.fixture
def restore_transformers():
    """install() patches process-wide state: put it back after the test."""
    import transformers

    saved = (vars(transformers).get("pipeline"), list(sys.meta_path), dict(qa_pipeline._originals))
    module = sys.modules.get("transformers.pipelines")
    saved_module = module.pipeline if module is not None else None
    options = qa_pipeline._default_options
    yield
    if saved[0] is None:
        vars(transformers).pop("pipeline", None)
    else:
        transformers.pipeline = saved[0]
    sys.meta_path[:] = saved[1]
    qa_pipeline._originals.clear()
    qa_pipeline._originals.update(saved[2])
    if module is not None:
        module.pipeline = saved_module
    qa_pipeline._default_options = options


def test_install_is_idempotent_and_other_tasks_reach_transformers(options, restore_transformers, tmp_path):
    import transformers.pipelines

    qa_pipeline.install(options)
    qa_pipeline.install()
    from transformers import pipeline as imported
    from transformers.pipelines import pipeline as from_pipelines

    assert imported is pipeline and from_pipelines is pipeline and transformers.pipeline is pipeline
    original = qa_pipeline._originals["pipeline"]
    assert original is not pipeline and original.__module__ == "transformers.pipelines"
    assert sum(isinstance(f, qa_pipeline._PatchOnImport) for f in sys.meta_path) <= 1

    pipe = transformers.pipeline("question-answering", model=str(model_dir(S0)))  # the install()'s options
    assert pipe.qa_model.options == options
    # Another task goes to transformers' own pipeline(), which fails on a directory with no model.
    with pytest.raises(Exception) as caught:
        imported("text-classification", model=str(tmp_path))
    frames = [
        Path(frame.filename) for frame in __import__("traceback").extract_tb(caught.value.__traceback__)
    ]
    assert any(frame.parts[-2:] == ("pipelines", "__init__.py") for frame in frames)
    # ...and its own question-answering is still the removed one.
    with pytest.raises(KeyError, match="has been removed"):
        original("question-answering", model=str(model_dir(S0)))


@pytest.mark.slow
def test_install_in_a_fresh_interpreter(tmp_path):
    """As the server runs a user's script: install() first (not importing transformers.pipelines),
    then the script's own imports."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from qa.options import QAOptions
        from qa.pipeline import QuestionAnsweringPipeline, install, pipeline as ours

        install(QAOptions(backend="torch", graph_cache={str(tmp_path)!r}))
        install()
        assert "transformers.pipelines" not in sys.modules  # 2+ s saved at start-up

        from transformers import pipeline                   # the user's script
        assert pipeline is ours
        pipe = pipeline("question-answering", model={str(model_dir(S0))!r}, tokenizer={str(model_dir(S0))!r})
        assert isinstance(pipe, QuestionAnsweringPipeline)
        answer = pipe(question="Who designed the lighthouse?", context="Matthias Oort designed the lighthouse.")

        from transformers.pipelines import pipeline as from_pipelines, TextClassificationPipeline
        assert from_pipelines is ours
        classifier = pipeline("text-classification", model={str(model_dir(S0))!r})
        assert isinstance(classifier, TextClassificationPipeline), type(classifier)
        print(json.dumps({{"answer": answer, "classifier": type(classifier).__module__}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out["answer"]) == {"score", "start", "end", "answer"}
    assert out["classifier"].startswith("transformers.pipelines")
