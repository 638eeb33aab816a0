"""Loads the inference hooks and runs one request through them; knows nothing of HTTP.

The built-in `code/inference.py` provides every hook. A user's `<model_dir>/code/inference.py`
(SageMaker extracts `model.tar.gz` into `/opt/ml/model`) overrides them one by one, as in the AWS
inference toolkits. A module defining `transform_fn` together with `input_fn`, `predict_fn` or
`output_fn` is a start-up error. Hooks may take a trailing `context` argument; it is passed only
to hooks that accept it.

Run as `python -m serving.handler check` to validate the hooks in a separate process: the
entrypoint does this at start-up so a bad handler fails fast without the supervisor importing
the model's libraries.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from qa.accounting import timed
from qa.errors import InvalidRequest
from qa.request import split_media_type
from serving.settings import Settings

log = logging.getLogger(__name__)

BUILTIN_CODE_DIR = Path(__file__).resolve().parent.parent / "code"
ENTRY_MODULE = "inference.py"
COMPAT_DIR = Path(__file__).resolve().parent / "compat"  # sagemaker_huggingface_inference_toolkit
REQUIREMENTS = "requirements.txt"
PIPELINE_HOOKS = ("input_fn", "predict_fn", "output_fn")
# Number of arguments each hook takes before the optional trailing `context`.
HOOK_ARITY = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}

# The warm-up request sent through the hooks before a worker reports ready (docs/contract.md#requests).
WARMUP_BODY = json.dumps(
    {
        "inputs": {
            "question": "What is being checked?",
            "context": "The serving stack is being checked by a warm-up request.",
        }
    }
).encode()

# Bodies the toolkits decode to text before a user's input_fn or transform_fn sees them.
TEXT_TYPES = ("application/json", "text/csv")

# SageMaker passes this header through to the container; both web layers echo it back.
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class HandlerError(Exception):
    """The inference code cannot be used; raised at start-up with a message saying how to fix it."""


@dataclasses.dataclass
class Context:
    """What the runtime passes to hooks that accept a trailing `context` argument."""

    settings: Settings
    model_dir: Path
    request_id: str | None = None
    custom_attributes: str | None = None
    # time.monotonic() by which the request must be answered (None outside requests).
    deadline: float | None = None


@dataclasses.dataclass(frozen=True)
class Hook:
    name: str
    fn: Callable[..., Any]
    origin: Path
    context_mode: str  # "positional", "keyword" or "none"
    is_user: bool

    def __call__(self, *args: Any, context: Context) -> Any:
        if self.context_mode == "positional":
            return self.fn(*args, context)
        if self.context_mode == "keyword":
            return self.fn(*args, context=context)
        return self.fn(*args)


def _context_mode(name: str, fn: Callable[..., Any], origin: Path) -> str:
    if not callable(fn):
        raise HandlerError(f"{origin}: {name} is not a function")
    arity = HOOK_ARITY[name]
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return "none"
    kinds = inspect.Parameter
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    var_positional = any(p.kind == kinds.VAR_POSITIONAL for p in params)
    if len(positional) < arity and not var_positional:
        raise HandlerError(
            f"{origin}: {name} takes {len(positional)} argument(s) but the runtime passes {arity} "
            f"(plus an optional trailing context): fix its signature"
        )
    if len(positional) > arity:
        return "positional"
    if any(p.name == "context" and p.kind == kinds.KEYWORD_ONLY for p in params):
        return "keyword"
    return "none"


def load_module(path: Path) -> ModuleType:
    """Import a hook module from a file under a name unique to its path (no clash between modules)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"qa_inference_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    # The one sys.path change outside tests: a user's inference.py may import the modules beside it
    # by plain name, as the AWS toolkits allow.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise HandlerError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
    return module


def _module_hooks(module: ModuleType, path: Path, *, is_user: bool) -> dict[str, Hook]:
    hooks = {
        name: Hook(
            name, getattr(module, name), path, _context_mode(name, getattr(module, name), path), is_user
        )
        for name in HOOK_ARITY
        if getattr(module, name, None) is not None
    }
    pipeline = [name for name in PIPELINE_HOOKS if name in hooks]
    if "transform_fn" in hooks and pipeline:
        raise HandlerError(
            f"{path} defines transform_fn and {', '.join(pipeline)}: define either transform_fn "
            f"or input_fn/predict_fn/output_fn, not both"
        )
    return hooks


def compose_hooks(builtin: dict[str, Hook], user: dict[str, Hook]) -> dict[str, Hook]:
    """User hooks override built-in ones one by one; a user transform_fn replaces the whole pipeline."""
    hooks: dict[str, Hook] = {}
    model_fn = user.get("model_fn") or builtin.get("model_fn")
    if model_fn is None:
        raise HandlerError("no model_fn: the inference code must define model_fn(model_dir)")
    hooks["model_fn"] = model_fn
    if "transform_fn" in user:
        hooks["transform_fn"] = user["transform_fn"]
        return hooks
    if not any(name in user for name in PIPELINE_HOOKS) and "transform_fn" in builtin:
        hooks["transform_fn"] = builtin["transform_fn"]
        return hooks
    for name in PIPELINE_HOOKS:
        hook = user.get(name) or builtin.get(name)
        if hook is None:
            raise HandlerError(f"no {name}: define it in code/inference.py (or define transform_fn instead)")
        hooks[name] = hook
    return hooks


def user_code_dir(settings: Settings) -> Path:
    return settings.model_dir / "code"


def load_hooks(settings: Settings, builtin_code_dir: Path = BUILTIN_CODE_DIR) -> dict[str, Hook]:
    builtin_path = builtin_code_dir / ENTRY_MODULE
    user_path = user_code_dir(settings) / settings.user_program
    if settings.user_program != ENTRY_MODULE and not user_path.is_file():
        raise HandlerError(
            f"SAGEMAKER_PROGRAM={settings.user_program} names {user_path}, which does not exist"
        )
    builtin = (
        _module_hooks(load_module(builtin_path), builtin_path, is_user=False)
        if builtin_path.is_file()
        else {}
    )
    user = {}
    if user_path.is_file():
        prepare_for_user_code(settings)
        user = _module_hooks(load_module(user_path), user_path, is_user=True)
    if not builtin and not user:
        raise HandlerError(f"no inference code: neither {builtin_path} nor {user_path} exists")
    hooks = compose_hooks(builtin, user)
    log.info("handler hooks: %s", ", ".join(f"{h.name} from {h.origin}" for h in hooks.values()))
    return hooks


def prepare_for_user_code(settings: Settings) -> None:
    """What scripts written for the Hugging Face container import: transformers 4's
    pipeline("question-answering") (qa/pipeline.py) and the toolkit's decoder_encoder. Appended to
    sys.path, so a real toolkit the user installs comes first."""
    if str(COMPAT_DIR) not in sys.path:
        sys.path.append(str(COMPAT_DIR))
    from qa.pipeline import install

    install(settings.qa)  # the QA_* settings apply to the scripts' pipelines too


def install_user_requirements(settings: Settings) -> None:
    """pip-install `<model_dir>/code/requirements.txt` when present, as the AWS toolkits do, but
    never a version of a package the image has that its own version does not satisfy: that would
    replace part of the serving stack (a `transformers<5` pin written for the Hugging Face container,
    say). Those lines are skipped with one log line each."""
    path = user_code_dir(settings) / REQUIREMENTS
    if not path.is_file():
        return
    if not settings.install_user_requirements:
        log.warning("not installing %s: QA_INSTALL_USER_REQUIREMENTS is false", path)
        return
    lines, conflicts = split_requirements(path.read_text(encoding="utf-8"))
    for requirement, have in conflicts:
        log.warning(
            "%s: not installing %r: this image provides %s, which its serving stack needs; %s",
            path,
            requirement,
            have,
            CONFLICT_HINTS.get(have.split()[0], "drop or widen the pin"),
        )
    if not any(line.strip() and not line.strip().startswith("#") for line in lines):
        return
    log.info("installing the user's requirements from %s", path)
    started = time.monotonic()
    # One pip at a time: on a multi-model endpoint models load side by side, into one environment.
    with (
        open(Path(tempfile.gettempdir()) / "qa-pip-install.lock", "w") as lock,
        tempfile.NamedTemporaryFile(
            "w", suffix="-requirements.txt", dir=path.parent if os.access(path.parent, os.W_OK) else None
        ) as kept,
    ):
        kept.write("\n".join(lines) + "\n")
        kept.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "-r",
                kept.name,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            cwd=path.parent,  # relative paths in the file mean the model's code/
        )
    for line in result.stdout.splitlines():
        log.info("pip: %s", line)
    if result.returncode != 0:
        raise HandlerError(
            f"pip install -r {path} failed with exit code {result.returncode} (see the pip lines above)"
        )
    log.info("installed the user's requirements in %.1f s", time.monotonic() - started)


# What to tell a user whose requirements.txt pins another version of the serving stack.
CONFLICT_HINTS = {
    "transformers": "transformers 4's pipeline('question-answering') is provided by this image "
    "(answers as 4.57.6's), so scripts written for the Hugging Face container need no such pin",
    "torch": "the image's CPU build of PyTorch serves the model",
}


def split_requirements(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(the lines to give pip, [(requirement, "name version" the image has)] to skip)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    lines: list[str] = []
    conflicts: list[tuple[str, str]] = []
    for line in text.splitlines():
        stripped = line.split(" #", 1)[0].strip()
        try:
            requirement = Requirement(stripped)
            have = version(requirement.name)
        except (InvalidRequirement, PackageNotFoundError):  # options, URLs, packages not installed
            lines.append(line)
            continue
        if requirement.specifier and not requirement.specifier.contains(have, prereleases=True):
            conflicts.append((stripped, f"{requirement.name} {have}"))
        else:
            lines.append(line)
    return lines, conflicts


def _as_response(result: Any, accept: str | None) -> tuple[bytes, str]:
    """A hook's result as the toolkits send it: bytes or str as they are, any other object
    encoded for its content type (the Hugging Face toolkit's encoders), or (result, content_type)."""
    content_type = None
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    if not content_type:
        concrete = accept and "," not in accept and "*" not in accept
        content_type = accept.strip() if concrete else "application/json"
    if not isinstance(result, (str, bytes, bytearray, memoryview)):
        from sagemaker_huggingface_inference_toolkit import decoder_encoder

        result = decoder_encoder.encode(result, split_media_type(str(content_type))[0])
    body = result.encode("utf-8") if isinstance(result, str) else bytes(result)
    return body, str(content_type)


def _as_hook_text(body: bytes, content_type: str | None) -> bytes | str:
    """The body as both AWS toolkits hand it to a user's hook: text for JSON and CSV."""
    if split_media_type(content_type)[0] in TEXT_TYPES:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"the body is not valid UTF-8: {exc}") from exc
    return body


class Handler:
    """The composed hooks plus the loaded model; `invoke` is safe to call from several threads."""

    def __init__(self, hooks: dict[str, Hook], settings: Settings, model_dir: Path):
        self.hooks = hooks
        self.settings = settings
        self.model_dir = model_dir
        self.model: Any = None
        # The built-in hooks are thread-safe (the batcher behind predict_fn takes requests from
        # many threads). A user's predict/transform_fn gets the toolkits' one-request-at-a-time
        # guarantee per worker.
        self._user_lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, model_dir: Path, builtin_code_dir: Path = BUILTIN_CODE_DIR) -> Handler:
        return cls(load_hooks(settings, builtin_code_dir), settings, model_dir)

    def context(self, **request: Any) -> Context:
        return Context(settings=self.settings, model_dir=self.model_dir, **request)

    @property
    def has_user_hooks(self) -> bool:
        return any(hook.is_user for hook in self.hooks.values())

    @property
    def toolkit_io(self) -> tuple[bool, bool]:
        """(decode, encode) as the Hugging Face toolkit does, where the built-in input_fn or
        output_fn works for a user's hooks: its predict_fn gets the decoded document, not this
        image's parsed request, and what it returns is encoded by the toolkit's encoders."""
        if "transform_fn" in self.hooks:
            return False, False
        user = {name for name, hook in self.hooks.items() if hook.is_user}
        decode = "input_fn" not in user and bool(user & {"model_fn", "predict_fn"})
        encode = "output_fn" not in user and bool(user & {"model_fn", "input_fn", "predict_fn"})
        return decode, encode

    def load_model(self) -> None:
        # A str, as the toolkits pass it (a pipeline built with tokenizer=model_dir needs one).
        self.model = self.hooks["model_fn"](str(self.model_dir), context=self.context())
        if self.model is None:
            raise HandlerError(f"model_fn from {self.hooks['model_fn'].origin} returned None")

    def _predict(self, hook: Hook, *args: Any, context: Context) -> Any:
        if hook.is_user:
            with self._user_lock:
                return hook(*args, context=context)
        return hook(*args, context=context)

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, context: Context
    ) -> tuple[bytes, str]:
        """Run one request through the hooks; returns (body, content_type); raises what they raise
        (QAError or ServingError for the client, anything else is a 500)."""
        if "transform_fn" in self.hooks:
            hook = self.hooks["transform_fn"]
            data = _as_hook_text(body, content_type) if hook.is_user else body
            with timed("transform"):
                result = self._predict(hook, self.model, data, content_type, accept, context=context)
            return _as_response(result, accept)
        decode, encode = self.toolkit_io
        input_fn, output_fn = self.hooks["input_fn"], self.hooks["output_fn"]
        with timed("parse"):
            if decode:
                from sagemaker_huggingface_inference_toolkit import decoder_encoder

                data = decoder_encoder.decode(
                    _as_hook_text(body, content_type), split_media_type(content_type)[0]
                )
            else:
                data = input_fn(
                    _as_hook_text(body, content_type) if input_fn.is_user else body,
                    content_type,
                    context=context,
                )
        prediction = self._predict(self.hooks["predict_fn"], data, self.model, context=context)
        with timed("encode"):
            if encode:
                # The toolkit answers JSON unless the client asks for another type it encodes.
                wanted = split_media_type(accept)[0] if accept and accept.strip() != "*/*" else None
                return _as_response((prediction, wanted or "application/json"), accept)
            return _as_response(output_fn(prediction, accept, context=context), accept)

    def warm_up(self) -> None:
        """One request through every hook; raises if the built-in stack cannot answer. Through a
        user's hooks, which may expect another request schema (the Hugging Face container sends
        none), a failure is only logged: their model loaded, and that is what /ping waits for."""
        try:
            # Bounded as a request is: a model that cannot answer in time fails the load.
            deadline = time.monotonic() + self.settings.request_timeout_s
            self.invoke(
                WARMUP_BODY,
                "application/json",
                "application/json",
                self.context(request_id="warm-up", deadline=deadline),
            )
        except Exception as exc:
            if not self.has_user_hooks:
                raise
            log.warning(
                "the warm-up request through the user's hooks failed (%s: %s); serving anyway",
                type(exc).__name__,
                exc,
            )


def _check_main(argv: list[str]) -> int:
    """`python -m serving.handler check`: import and compose the hooks, exit 1 with the reason."""
    import os

    from serving import logs
    from serving.settings import SettingsError

    if argv != ["check"]:
        print("usage: python -m serving.handler check", file=sys.stderr)
        return 2
    try:
        settings = Settings.load(os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, log_format=settings.log_format)
    try:
        load_hooks(settings)
    except HandlerError as exc:
        log.error("bad inference code: %s", exc, exc_info=exc.__cause__ is not None)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_check_main(sys.argv[1:]))
