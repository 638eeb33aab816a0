"""Model_Deployment_Docker.ipynb: well-formed, every code cell compiles, the cells tagged
`local` run (here, without AWS), the deploy-tool calls parse, and the SDK calls it makes
exist with those arguments in the pinned SDK.

No Jupyter kernel is installed in the dev venv, so `local` cells run by `exec` of their source,
in order, in one namespace (they contain no `!`/`%` lines), with every botocore API call made
to fail: a `local` cell that reached AWS would fail here.
"""

from __future__ import annotations

import ast
import inspect
import warnings

import nbformat
import pytest
from botocore.client import BaseClient
from deploy_testkit import REPO

from deploy.cli import build_parser

NOTEBOOK = REPO / "Model_Deployment_Docker.ipynb"
TAGS = {"install", "local", "aws", "hub", "docker"}


@pytest.fixture(scope="module")
def notebook():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def code_cells(nb, tag: str | None = None):
    cells = [c for c in nb.cells if c.cell_type == "code"]
    return [c for c in cells if tag is None or tag in c.metadata.get("tags", [])]


def python_source(cell) -> str:
    """The cell without IPython's `!shell` and `%magic` lines."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("!", "%")))


def test_every_code_cell_has_one_known_tag_and_no_outputs(notebook):
    for index, cell in enumerate(code_cells(notebook)):
        tags = set(cell.metadata.get("tags", [])) & TAGS
        assert len(tags) == 1, f"code cell {index} needs exactly one of {sorted(TAGS)}: {cell.source[:80]!r}"
        assert not cell.outputs and cell.execution_count is None, f"code cell {index} has saved outputs"


def test_the_user_steps_are_there_in_order(notebook):
    headings = [
        line
        for c in notebook.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("## ")
    ]
    steps = [
        "Install the SageMaker Python SDK",
        "Settings, sample input",
        "Create the SageMaker endpoint",
        "Create the model object",
        "Deploy the model",
        "Test with a sample input",
        "Run the predictor",
        "Clean up",
    ]
    found = [next(i for i, h in enumerate(headings) if step in h) for step in steps]
    assert found == sorted(found), headings


def test_every_code_cell_compiles(notebook):
    for index, cell in enumerate(code_cells(notebook)):
        compile(python_source(cell), f"{NOTEBOOK.name}[code cell {index}]", "exec")


def test_install_cell_pins_the_sdk(notebook):
    [install] = code_cells(notebook, "install")
    assert '"sagemaker==2.257.7"' in install.source


def test_local_cells_run_without_aws(notebook, monkeypatch):
    def no_aws(self, operation, params):
        raise AssertionError(f"a `local` notebook cell called AWS: {operation}")

    monkeypatch.setattr(BaseClient, "_make_api_call", no_aws)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    monkeypatch.chdir(REPO)
    namespace: dict = {"__name__": "__notebook__"}
    cells = code_cells(notebook, "local")
    assert len(cells) >= 3
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SageMaker Python SDK v2.*")
        for index, cell in enumerate(cells):
            assert python_source(cell) == cell.source, f"local cell {index} has shell or magic lines"
            exec(compile(cell.source, f"{NOTEBOOK.name}[local cell {index}]", "exec"), namespace)
    payload, context = namespace["payload"], namespace["context"]
    assert set(payload) == {"inputs", "parameters"} and set(payload["inputs"]) == {"question", "context"}
    check = namespace["check_answer"]
    with pytest.raises(AssertionError):
        check({"score": 0.5, "start": 0, "end": 3, "answer": "not the span"}, context)
    with pytest.raises(AssertionError):
        check({"score": 0.5, "start": 0, "end": 3}, context)


def deploy_calls(notebook) -> list[list[str]]:
    """Arguments of every deploy_cli(...) call; non-literal arguments become a placeholder."""
    calls = []
    for cell in code_cells(notebook):
        for node in ast.walk(ast.parse(python_source(cell))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "deploy_cli":
                calls.append(
                    [
                        a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else "placeholder"
                        for a in node.args
                    ]
                )
    return calls


def test_deploy_tool_calls_parse(notebook):
    calls = deploy_calls(notebook)
    assert {c[0] for c in calls} >= {"package", "invoke", "autoscale", "batch", "delete"}
    parser = build_parser()
    for args in calls:
        parser.parse_args(args)  # SystemExit (an unknown option) fails the test


def test_sdk_calls_match_the_pinned_sdk(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*SageMaker Python SDK v2.*")
        pytest.importorskip("sagemaker", reason="needs sagemaker==2.257.7 (requirements-dev)")
        from sagemaker.model import Model
        from sagemaker.predictor import Predictor
        from sagemaker.serverless import ServerlessInferenceConfig

    def params(fn) -> set[str]:
        return set(inspect.signature(fn).parameters)

    assert params(Model.__init__) >= {
        "image_uri",
        "model_data",
        "role",
        "env",
        "predictor_cls",
        "sagemaker_session",
    }
    assert params(Model.deploy) >= {
        "initial_instance_count",
        "instance_type",
        "endpoint_name",
        "serializer",
        "deserializer",
        "serverless_inference_config",
        "container_startup_health_check_timeout",
    }
    assert params(ServerlessInferenceConfig.__init__) >= {"memory_size_in_mb", "max_concurrency"}
    assert params(Predictor.__init__) >= {"endpoint_name", "sagemaker_session", "serializer", "deserializer"}
