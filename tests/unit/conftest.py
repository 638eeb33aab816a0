"""The tiny fixture model, shared between the tests of qa/, serving/ and code/ (the folders here
mirror the tree). code/ (`import inference`, the hooks as the runtime loads them) and
tests/fixtures (golden_cases.py) are on pytest's `pythonpath` (pyproject.toml)."""

import types
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qa_model_dir() -> Path:
    """A tiny DistilBERT QA model saved by transformers 4.57.6 (committed fixture)."""
    from golden_cases import model_dir

    return model_dir("distilbert-tiny-s0")


@pytest.fixture(scope="module")
def tiny(qa_model_dir):
    """(model dir, the PyTorch module) of the tiny model, for the graph and backend tests."""
    from transformers import AutoModelForQuestionAnswering

    return qa_model_dir, AutoModelForQuestionAnswering.from_pretrained(
        qa_model_dir, local_files_only=True
    ).eval()


@pytest.fixture(scope="session")
def qa_model(qa_model_dir):
    """The model on the torch backend, the reference the other backends are compared with."""
    import inference

    from serving.settings import Settings

    context = types.SimpleNamespace(settings=Settings(backend="torch"), model_dir=None, request_id=None)
    return inference.model_fn(qa_model_dir, context)


@pytest.fixture
def make_context():
    """Builds a runtime context as serving/handler.py passes it, with Settings overrides."""
    from serving.settings import Settings

    def make(**settings):
        return types.SimpleNamespace(
            settings=Settings(**settings), model_dir=None, request_id=None, custom_attributes=None
        )

    return make
