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
from qa.errors import QAError
from serving.errors import ServingError, as_serving_error
from serving.settings import Settings

log = logging.getLogger(__name__)

BUILTIN_CODE_DIR = Path(__file__).resolve().parent.parent / "code"
ENTRY_MODULE = "inference.py"
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
    user_path = user_code_dir(settings) / ENTRY_MODULE
    builtin = (
        _module_hooks(load_module(builtin_path), builtin_path, is_user=False)
        if builtin_path.is_file()
        else {}
    )
    user = _module_hooks(load_module(user_path), user_path, is_user=True) if user_path.is_file() else {}
    if not builtin and not user:
        raise HandlerError(f"no inference code: neither {builtin_path} nor {user_path} exists")
    hooks = compose_hooks(builtin, user)
    log.info("handler hooks: %s", ", ".join(f"{h.name} from {h.origin}" for h in hooks.values()))
    return hooks


def install_user_requirements(settings: Settings) -> None:
    """pip-install `<model_dir>/code/requirements.txt` when present, as the AWS toolkits do."""
    path = user_code_dir(settings) / REQUIREMENTS
    if not path.is_file():
        return
    if not settings.install_user_requirements:
        log.warning("not installing %s: QA_INSTALL_USER_REQUIREMENTS is false", path)
        return
    log.info("installing the user's requirements from %s", path)
    started = time.monotonic()
    # One pip at a time: on a multi-model endpoint models load side by side, into one environment.
    with open(Path(tempfile.gettempdir()) / "qa-pip-install.lock", "w") as lock:
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
                str(path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    for line in result.stdout.splitlines():
        log.info("pip: %s", line)
    if result.returncode != 0:
        raise HandlerError(
            f"pip install -r {path} failed with exit code {result.returncode} (see the pip lines above)"
        )
    log.info("installed the user's requirements in %.1f s", time.monotonic() - started)


def _as_response(result: Any, accept: str | None, hook: str) -> tuple[bytes, str]:
    content_type = None
    if isinstance(result, tuple) and len(result) == 2:
        result, content_type = result
    if isinstance(result, str):
        body = result.encode("utf-8")
    elif isinstance(result, (bytes, bytearray, memoryview)):
        body = bytes(result)
    else:
        raise TypeError(
            f"{hook} returned {type(result).__name__}; it must return bytes or str, or (body, content_type)"
        )
    if not content_type:
        concrete = accept and "," not in accept and "*" not in accept
        content_type = accept.strip() if concrete else "application/json"
    return body, str(content_type)


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
    def overrides_input(self) -> bool:
        hook = self.hooks.get("transform_fn") or self.hooks["input_fn"]
        return hook.is_user

    def load_model(self) -> None:
        self.model = self.hooks["model_fn"](self.model_dir, context=self.context())
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
            with timed("transform"):
                result = self._predict(
                    self.hooks["transform_fn"], self.model, body, content_type, accept, context=context
                )
            return _as_response(result, accept, "transform_fn")
        with timed("parse"):
            data = self.hooks["input_fn"](body, content_type, context=context)
        prediction = self._predict(self.hooks["predict_fn"], data, self.model, context=context)
        with timed("encode"):
            result = self.hooks["output_fn"](prediction, accept, context=context)
        return _as_response(result, accept, "output_fn")

    def warm_up(self) -> None:
        """One request through every hook; raises if the stack cannot answer."""
        try:
            self.invoke(
                WARMUP_BODY, "application/json", "application/json", self.context(request_id="warm-up")
            )
        except (ServingError, QAError) as exc:
            # A user's input_fn may expect another request schema: a clean 4xx still proves the
            # hooks and the model respond. The built-in handler must answer the sample.
            served, _ = as_serving_error(exc)
            if served.status >= 500 or not self.overrides_input:
                raise
            log.info(
                "warm-up request rejected by the user's input code (%d %s: %s); counted as passed",
                served.status,
                served.type,
                served.message,
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
        settings = Settings.from_env(os.environ)
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
