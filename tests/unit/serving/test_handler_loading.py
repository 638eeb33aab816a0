"""serving/handler.py: hook loading and override rules, the transform_fn conflict, context passing,
response normalisation, warm-up rules and the user's requirements.txt. Uses small stand-in
modules, not the real model."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from serving import handler as handler_mod
from serving.errors import BadRequest
from serving.handler import Handler, HandlerError, compose_hooks, install_user_requirements, load_hooks
from serving.settings import Settings

BUILTIN = """
import json
CALLS = []

def model_fn(model_dir, context=None):
    return {"origin": "builtin", "dir": str(model_dir), "ctx": context is not None}

def input_fn(body, content_type, context=None):
    CALLS.append(("input_fn", content_type, getattr(context, "request_id", None)))
    data = json.loads(body)
    if not data:
        raise BadRequest("empty")
    return data

def predict_fn(data, model, context=None):
    return {"builtin_predict": data, "model": model["origin"]}

def output_fn(prediction, accept, context=None):
    return json.dumps(prediction).encode(), "application/json"

from serving.errors import BadRequest
"""


def write(path: Path, source: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "inference.py").write_text(source)
    return path


@pytest.fixture
def dirs(tmp_path):
    builtin = write(tmp_path / "builtin", BUILTIN)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    return builtin, model_dir


def load(dirs, user_source: str | None = None, **settings) -> Handler:
    builtin, model_dir = dirs
    if user_source is not None:
        write(model_dir / "code", user_source)
    s = Settings(model_dir=model_dir, **settings)
    return Handler.load(s, model_dir, builtin_code_dir=builtin)


def call(h: Handler, body=b'{"q": 1}', content_type="application/json", accept=None, **ctx):
    h.load_model()
    out, content = h.invoke(body, content_type, accept, h.context(**ctx))
    return json.loads(out) if content == "application/json" else out, content


def test_builtin_hooks_alone(dirs):
    h = load(dirs)
    assert {hook.is_user for hook in h.hooks.values()} == {False}
    assert call(h) == ({"builtin_predict": {"q": 1}, "model": "builtin"}, "application/json")


def test_user_hooks_override_one_by_one(dirs):
    h = load(dirs, "def predict_fn(data, model):\n    return {'user_predict': data}\n")
    assert (
        h.hooks["predict_fn"].is_user and not h.hooks["input_fn"].is_user and not h.hooks["model_fn"].is_user
    )
    assert call(h)[0] == {"user_predict": {"q": 1}}


def test_user_model_fn_replaces_the_builtin_one(dirs):
    h = load(dirs, "def model_fn(model_dir):\n    return {'origin': 'user'}\n")
    assert call(h)[0]["model"] == "user"


def test_user_transform_fn_replaces_the_pipeline(dirs):
    h = load(
        dirs, "def transform_fn(model, body, content_type, accept):\n    return body.upper(), 'text/plain'\n"
    )
    assert set(h.hooks) == {"model_fn", "transform_fn"}
    assert call(h, body=b"abc") == (b"ABC", "text/plain")


def test_transform_fn_with_pipeline_hooks_is_a_start_up_error(dirs):
    with pytest.raises(HandlerError, match="transform_fn and input_fn, output_fn"):
        load(
            dirs,
            "def transform_fn(model, body, ct, accept):\n    return body\n"
            "def input_fn(body, ct):\n    return body\n"
            "def output_fn(p, accept):\n    return p\n",
        )


def test_a_module_without_model_fn_anywhere_is_an_error():
    with pytest.raises(HandlerError, match="model_fn"):
        compose_hooks({}, {})


def test_a_missing_pipeline_hook_is_named(tmp_path):
    builtin = write(tmp_path / "b", "def model_fn(d):\n    return 1\ndef input_fn(b, c):\n    return b\n")
    with pytest.raises(HandlerError, match="predict_fn"):
        load_hooks(Settings(model_dir=tmp_path / "m"), builtin)


def test_import_errors_and_bad_signatures_are_start_up_errors(dirs):
    with pytest.raises(HandlerError, match="import failed: ZeroDivisionError"):
        load(dirs, "x = 1 / 0\n")


def test_a_hook_with_too_few_arguments_is_a_start_up_error(tmp_path):
    builtin = write(tmp_path / "b", BUILTIN)
    model_dir = tmp_path / "m"
    write(model_dir / "code", "def input_fn(body):\n    return body\n")
    with pytest.raises(HandlerError, match="input_fn takes 1 argument"):
        load_hooks(Settings(model_dir=model_dir), builtin)


def test_context_is_passed_only_to_hooks_that_accept_it(dirs):
    user = (
        "SEEN = {}\n"
        "def input_fn(body, content_type, context):\n    SEEN['input'] = context.request_id\n    return body\n"
        "def predict_fn(data, model, *, context=None):\n    SEEN['predict'] = context.custom_attributes\n    return data\n"
        "def output_fn(prediction, accept):\n    return prediction\n"
    )
    h = load(dirs, user)
    modes = {name: hook.context_mode for name, hook in h.hooks.items()}
    assert modes == {
        "model_fn": "positional",
        "input_fn": "positional",
        "predict_fn": "keyword",
        "output_fn": "none",
    }
    body, content_type = call(h, body=b"raw", accept="text/plain", request_id="r-1", custom_attributes="a=b")
    assert (body, content_type) == (b"raw", "text/plain")
    seen = h.hooks["input_fn"].fn.__globals__["SEEN"]
    assert seen == {"input": "r-1", "predict": "a=b"}


@pytest.mark.parametrize(
    "returned, accept, expected",
    [
        ("'text'", None, (b"text", "application/json")),
        ("b'raw'", "text/csv", (b"raw", "text/csv")),
        ("b'raw'", "*/*", (b"raw", "application/json")),
        ("b'raw'", "application/json, text/csv", (b"raw", "application/json")),
        ("(bytearray(b'x'), 'application/x-custom')", None, (b"x", "application/x-custom")),
    ],
)
def test_output_fn_may_return_a_body_or_body_and_type(dirs, returned, accept, expected):
    h = load(dirs, f"def output_fn(prediction, accept):\n    return {returned}\n")
    h.load_model()
    assert h.invoke(b'{"a": 1}', "application/json", accept, h.context()) == expected


@pytest.mark.parametrize(
    "returned, accept, expected",
    [
        ("{'predictions': [1.5, 'é']}", None, ('{"predictions":[1.5,"é"]}'.encode(), "application/json")),
        ("42", "application/json", (b"42", "application/json")),
        ("({'a': 1}, 'application/json')", "text/csv", (b'{"a":1}', "application/json")),
        ("[{'answer': 'x', 'score': 0.5}]", "text/csv", (b"answer,score\r\nx,0.5\r\n", "text/csv")),
    ],
)
def test_output_fn_objects_are_encoded_as_the_hugging_face_toolkit_encodes_them(
    dirs, returned, accept, expected
):
    h = load(dirs, f"def output_fn(prediction, accept):\n    return {returned}\n")
    h.load_model()
    assert h.invoke(b'{"a": 1}', "application/json", accept, h.context()) == expected


def test_modules_get_unique_names(tmp_path):
    a = write(tmp_path / "a", "VALUE = 'a'\n")
    b = write(tmp_path / "b", "VALUE = 'b'\n")
    mod_a = handler_mod.load_module(a / "inference.py")
    mod_b = handler_mod.load_module(b / "inference.py")
    assert (mod_a.VALUE, mod_b.VALUE) == ("a", "b") and mod_a.__name__ != mod_b.__name__


@pytest.fixture
def handler_log(caplog):
    """The handler's log records, whatever an earlier test made of the logging tree."""
    caplog.set_level(
        logging.INFO, logger=handler_mod.log.name
    )  # an earlier test may have raised the root's level
    handler_mod.log.addHandler(caplog.handler)
    yield caplog
    handler_mod.log.removeHandler(caplog.handler)


def test_a_failing_warm_up_through_user_hooks_is_only_logged(dirs, handler_log):
    caplog = handler_log
    """The Hugging Face container sends no warm-up: a user's hooks may expect another schema."""
    for user in (
        "def predict_fn(data, model):\n    raise ValueError('broken')\n",
        "from serving.errors import BadRequest\ndef input_fn(body, ct):\n    raise BadRequest('my schema differs')\n",
        "def predict_fn(data, model):\n    return data['question']\n",
    ):
        h = load(dirs, user)
        h.load_model()
        caplog.clear()
        h.warm_up()
        assert "warm-up request through the user's hooks failed" in caplog.text


def test_warm_up_rejects_a_4xx_from_builtin_input_code(tmp_path):
    builtin = write(tmp_path / "b", BUILTIN.replace("data = json.loads(body)", "data = {}"))
    h = Handler.load(Settings(model_dir=tmp_path / "m"), tmp_path / "m", builtin_code_dir=builtin)
    h.load_model()
    with pytest.raises(BadRequest):
        h.warm_up()


def test_model_fn_returning_none_is_an_error(dirs):
    h = load(dirs, "def model_fn(model_dir):\n    return None\n")
    with pytest.raises(HandlerError, match="returned None"):
        h.load_model()


def test_user_requirements_are_installed_with_pip(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text("some-package==1.0\n")
    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="Successfully installed some-package-1.0\n")

    monkeypatch.setattr(handler_mod.subprocess, "run", fake_run)
    install_user_requirements(Settings(model_dir=tmp_path))
    assert (
        commands
        and commands[0][1:4] == ["-m", "pip", "install"]
        and commands[0][-1].endswith("requirements.txt")
    )

    commands.clear()
    install_user_requirements(Settings(model_dir=tmp_path, install_user_requirements=False))
    assert commands == []

    monkeypatch.setattr(
        handler_mod.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, stdout="ERROR\n")
    )
    with pytest.raises(HandlerError, match="pip install"):
        install_user_requirements(Settings(model_dir=tmp_path))


def test_no_requirements_file_means_no_pip(tmp_path, monkeypatch):
    monkeypatch.setattr(handler_mod.subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    install_user_requirements(Settings(model_dir=tmp_path))


# ---- scripts written for the Hugging Face container ------------------------------------------------


def test_user_hooks_get_what_the_toolkits_hand_them(dirs):
    """model_fn: model_dir as a str; predict_fn without input_fn: the decoded document (CSV as the
    Hugging Face toolkit decodes it); input_fn: JSON and CSV bodies as text."""
    user = """
def model_fn(model_dir):
    return {"origin": "user", "dir_type": type(model_dir).__name__}

def predict_fn(data, model):
    return {"inputs": data.pop("inputs", None), "dir_type": model["dir_type"]}
"""
    h = load(dirs, user)
    assert h.toolkit_io == (True, True)
    got, content_type = call(h, body=b'{"inputs": {"question": "Q", "context": "C"}}')
    assert content_type == "application/json" and got["dir_type"] == "str"
    assert got["inputs"] == {"question": "Q", "context": "C"}
    got, _ = call(h, body=b"question,context\nWho?,Ada did.\n", content_type="text/csv")
    assert got["inputs"] == [{"question": "Who?", "context": "Ada did."}]
    other_model = dirs[1].parent / "other-model"  # modules are cached by path: another directory
    text_input = load(
        (dirs[0], other_model),
        "def input_fn(body, content_type):\n    return {'type': type(body).__name__}\n",
    )
    assert call(text_input)[0]["builtin_predict"] == {"type": "str"}
    binary = call(text_input, body=b"\x00\x01", content_type="application/octet-stream")
    assert binary[0]["builtin_predict"] == {"type": "bytes"}


def test_the_toolkit_decoder_refuses_what_it_cannot_decode(dirs):
    from qa.errors import InvalidRequest, UnsupportedContentType

    h = load(dirs, "def predict_fn(data, model):\n    return data\n")
    with pytest.raises(UnsupportedContentType, match="application/jsonlines"):
        call(h, body=b'{"a": 1}\n', content_type="application/jsonlines")
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        call(h, body=b"{nope")
    with pytest.raises(InvalidRequest, match="Header columns"):
        call(h, body=b"a,b\n1,2\n", content_type="text/csv")


def test_decoder_encoder_is_importable_by_user_code(dirs):
    user = """
from sagemaker_huggingface_inference_toolkit import content_types, decoder_encoder

def input_fn(body, content_type):
    data = decoder_encoder.decode(body, content_type)
    data["parameters"] = {"top_k": 2}
    return data

def output_fn(prediction, accept):
    return decoder_encoder.encode(prediction, accept or content_types.JSON)
"""
    got, _ = call(load(dirs, user), accept="application/json")
    assert got == {"builtin_predict": {"q": 1, "parameters": {"top_k": 2}}, "model": "builtin"}


def test_sagemaker_program_names_the_entry_point(dirs):
    builtin, model_dir = dirs
    code = model_dir / "code"
    code.mkdir(parents=True)
    (code / "serve_qa.py").write_text("def predict_fn(data, model):\n    return {'from': 'serve_qa'}\n")
    settings = Settings(model_dir=model_dir, user_program="serve_qa.py")
    assert call(Handler.load(settings, model_dir, builtin_code_dir=builtin))[0] == {"from": "serve_qa"}
    with pytest.raises(HandlerError, match="SAGEMAKER_PROGRAM=missing.py"):
        Handler.load(
            Settings(model_dir=model_dir, user_program="missing.py"), model_dir, builtin_code_dir=builtin
        )


@pytest.mark.parametrize(
    "value, expected", [("serve_qa.py", "serve_qa.py"), ("serve_qa", "serve_qa.py"), ("", "inference.py")]
)
def test_sagemaker_program_setting(value, expected):
    assert Settings.from_env({"SAGEMAKER_PROGRAM": value}, cpu_limit=2).user_program == expected


def test_sagemaker_program_must_be_a_file_name():
    from serving.settings import SettingsError

    with pytest.raises(SettingsError, match="SAGEMAKER_PROGRAM"):
        Settings.from_env({"SAGEMAKER_PROGRAM": "../evil.py"}, cpu_limit=2)


def test_requirements_that_would_replace_the_serving_stack_are_skipped(tmp_path, monkeypatch, handler_log):
    caplog = handler_log
    import importlib.metadata

    transformers = importlib.metadata.version("transformers")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text(
        "transformers>=4.26,<5  # for the Hugging Face container\nsome-new-package==1.0\ntorch\n"
    )
    given = []

    def fake_run(cmd, **kwargs):
        given.append(Path(cmd[-1]).read_text())
        return subprocess.CompletedProcess(cmd, 0, stdout="ok\n")

    monkeypatch.setattr(handler_mod.subprocess, "run", fake_run)
    install_user_requirements(Settings(model_dir=tmp_path))
    assert given and "some-new-package==1.0" in given[0] and "torch" in given[0]
    assert "transformers" not in given[0]
    warning = next(r.getMessage() for r in caplog.records if "not installing" in r.getMessage())
    assert "transformers>=4.26,<5" in warning and f"transformers {transformers}" in warning
    assert "pipeline('question-answering')" in warning


def test_only_conflicting_requirements_means_no_pip(tmp_path, monkeypatch):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "requirements.txt").write_text("transformers<5\n")
    monkeypatch.setattr(handler_mod.subprocess, "run", lambda *a, **k: pytest.fail("pip ran"))
    install_user_requirements(Settings(model_dir=tmp_path))
