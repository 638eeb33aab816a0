"""The slim image (./build.sh --slim): no training framework, the full image's answers from the
graphs the full image made, and a clear start-up error (or, on a multi-model endpoint, a failed
load of that model only) when a model comes without the graph it needs. The HTTP suite runs on it
too (the `slim` target, tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from golden_cases import load_cases
from target import ContainerTarget, model_with_graphs
from targets import TINY_MODEL, ServerDied

pytestmark = pytest.mark.container

TRAINING_FRAMEWORK = ("torch", "transformers", "nncf", "onnx", "sklearn")
SERVING = (
    "openvino",
    "onnxruntime",
    "tokenizers",
    "numpy",
    "gunicorn",
    "falcon",
    "mms",
    "sagemaker_inference",
)
# serving/exit_codes.py: a model that cannot load halts gunicorn; a bad setting stops the start.
GUNICORN_DIED = 4
# QA_BACKEND=openvino: the same plan whichever CPU class runs this test.
INT8 = {"QA_PRECISION": "int8", "QA_BACKEND": "openvino"}


def requests_of(model: str) -> list[dict]:
    return [c["request"] for c in load_cases() if c["model"] == model][:8]


def answers(target: ContainerTarget, bodies: list[dict]) -> list:
    got = []
    for body in bodies:
        resp = requests.post(f"{target.base_url}/invocations", json=body, timeout=30)
        got.append((resp.status_code, resp.json()))
    return got


def processes_mapping_libtorch(target: ContainerTarget) -> str:
    out = subprocess.run(
        ["docker", "exec", target.name, "sh", "-c", "grep -l libtorch /proc/[0-9]*/maps 2>/dev/null; true"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="module")
def shipped_model(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its fp32 and int8 graphs, made by the full image."""
    return model_with_graphs(
        image, TINY_MODEL, tmp_path_factory.mktemp("shipped") / "model", ("fp32", "int8")
    )


def test_the_slim_image_has_the_runtime_and_not_the_training_framework(slim_image: str) -> None:
    script = (
        "import importlib.util, json\n"
        f"print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {TRAINING_FRAMEWORK + SERVING}}}))"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", slim_image, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(out.stdout)
    assert [name for name in TRAINING_FRAMEWORK if found[name]] == [], found
    assert [name for name in SERVING if not found[name]] == [], found

    # Making graphs is the full image's job, and the slim one says so.
    made = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            slim_image,
            "python",
            "-m",
            "qa.graphs",
            "export",
            "/tmp",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode != 0
    assert "full image" in made.stderr and "Traceback" not in made.stderr, made.stderr


def test_slim_serves_shipped_graphs_with_the_full_images_answers_and_no_libtorch(
    image: str, slim_image: str, shipped_model: Path, containers
) -> None:
    bodies = requests_of("distilbert-tiny-s0")
    got = {}
    for name in (image, slim_image):
        target = containers(name, shipped_model, INT8)
        got[name] = answers(target, bodies)
        logs = target.logs()
        assert "using the graph /opt/ml/model/graphs/qa-int8-static-" in logs, logs[-3000:]
        assert "made the" not in logs, logs[-3000:]
        assert processes_mapping_libtorch(target) == "", f"{name}: libtorch is mapped"
        target.stop()
    assert all(status == 200 for status, _ in got[slim_image]), got[slim_image]
    assert got[slim_image] == got[image]


def test_a_model_without_its_graph_is_a_start_up_error_that_says_how_to_make_it(
    slim_image: str, shipped_model: Path, containers
) -> None:
    plain = containers(slim_image, TINY_MODEL, INT8, wait=False)
    with pytest.raises(ServerDied) as failure:
        plain.wait_ready(deadline_s=120)
    message = str(failure.value)
    assert "no int8-static graph for this model" in message, message[-3000:]
    assert "python -m qa.graphs export" in message and "--graphs-from-image" in message, message[-3000:]
    assert plain.wait_exit(30) == GUNICORN_DIED

    torch = containers(slim_image, shipped_model, {"QA_BACKEND": "torch"}, wait=False)
    with pytest.raises(ServerDied) as failure:
        torch.wait_ready(deadline_s=120)
    assert "QA_BACKEND=torch runs the model with PyTorch, which this image does not have" in str(
        failure.value
    )
    assert torch.wait_exit(30) == GUNICORN_DIED


def test_multi_model_slim_loads_shipped_graphs_and_refuses_a_model_without_them(
    image: str, slim_image: str, shipped_model: Path, containers, tmp_path
) -> None:
    mounts = (
        "-v", f"{shipped_model}:/opt/ml/models/shipped/model:ro",
        "-v", f"{TINY_MODEL}:/opt/ml/models/plain/model:ro",
    )  # fmt: skip
    endpoint = containers(
        slim_image, None, {"SAGEMAKER_MULTI_MODEL": "true", **INT8}, network="none", docker_args=mounts
    )

    def call(path: str, body: dict | None = None, timeout_s: float = 120):
        status, payload = endpoint.http_in_container(
            path, json.dumps(body).encode() if body else None, None, timeout_s
        )
        return status, json.loads(payload) if payload.strip() else None

    assert call("/models", {"model_name": "shipped", "url": "/opt/ml/models/shipped/model"})[0] == 200
    status, body = call("/models", {"model_name": "plain", "url": "/opt/ml/models/plain/model"})
    assert status >= 400, body
    assert "no int8-static graph for this model" in endpoint.logs(), endpoint.logs()[-3000:]

    request = requests_of("distilbert-tiny-s0")[0]
    status, got = call("/models/shipped/invoke", request)
    assert status == 200, got
    full = containers(image, shipped_model, INT8)
    assert answers(full, [request]) == [(200, got)]
    status, listed = call("/models")
    assert [m["modelName"] for m in listed["models"]] == ["shipped"]
