"""Multi-model endpoints (SAGEMAKER_MULTI_MODEL=true): Multi Model Server in the image, driven the
way SageMaker drives it: load models from directories under /opt/ml/models, list them, invoke each,
unload. Each model must answer with its own weights (golden answers of three different tiny
models), and errors keep the JSON shape of the single-model stack.

The container runs in its own network namespace (`--network none`, SageMaker's port 8080) and
requests are made from inside it: MMS binds every interface, and test traffic stays on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from emf import check_emf
from golden_cases import load_cases, model_dir
from memory_models import holding_model, hungry_model, wide_model
from target import ContainerTarget
from user_code import MARKER, model_with_dependency

pytestmark = pytest.mark.container

MODELS = ("distilbert-tiny-s0", "distilbert-tiny-s1", "distilbert-tiny-s2")
REL_TOL = 1e-4


def first_case(model: str) -> dict:
    return next(c for c in load_cases() if c["model"] == model and isinstance(c["expected"], dict))


def call(
    target: ContainerTarget,
    path: str,
    body: dict | None = None,
    method: str | None = None,
    timeout_s: float = 10,
):
    status, payload = target.http_in_container(
        path, json.dumps(body).encode() if body is not None else None, method, timeout_s
    )
    return status, json.loads(payload) if payload.strip() else None


def load(target: ContainerTarget, name: str, url: str):
    # Loading answers when the model is loaded, exported to ONNX, warmed up (and its requirements
    # installed): over 10 s on a slow CI machine. SageMaker allows minutes.
    return call(target, "/models", {"model_name": name, "url": url}, timeout_s=120)


def container_python(target: ContainerTarget, script: str) -> str:
    out = subprocess.run(
        ["docker", "exec", target.name, "python", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout


def model_server_processes(target: ContainerTarget) -> dict[int, list[str]]:
    """MMS's Java front end(s) in the container: pid -> argv."""
    script = (
        "import json, os\n"
        "found = {}\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        argv = open(f'/proc/{pid}/cmdline', 'rb').read().decode().split('\\0')\n"
        "    except OSError:\n"
        "        continue\n"
        "    if 'com.amazonaws.ml.mms.ModelServer' in argv:\n"
        "        found[pid] = argv\n"
        "print(json.dumps(found))\n"
    )
    return {int(pid): argv for pid, argv in json.loads(container_python(target, script)).items()}


@pytest.fixture
def endpoint(image: str, containers, tmp_path) -> ContainerTarget:
    # SageMaker downloads each model.tar.gz into its own directory under /opt/ml/models.
    mounts: list[str] = []
    for name in MODELS:
        mounts += ["-v", f"{model_dir(name)}:/opt/ml/models/{name}/model:ro"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README").write_text("no config.json, no weights")
    mounts += ["-v", f"{broken}:/opt/ml/models/broken/model:ro"]
    return containers(
        image, None, {"SAGEMAKER_MULTI_MODEL": "true"}, network="none", docker_args=tuple(mounts)
    )


def test_each_model_answers_with_its_own_weights(endpoint: ContainerTarget) -> None:
    for name in MODELS:
        status, body = load(endpoint, name, f"/opt/ml/models/{name}/model")
        assert status == 200, body
    status, listed = call(endpoint, "/models")
    assert status == 200
    assert sorted(m["modelName"] for m in listed["models"]) == sorted(MODELS)

    for name in MODELS:
        case = first_case(name)
        status, got = call(endpoint, f"/models/{name}/invoke", case["request"])
        assert status == 200, got
        want = case["expected"]
        assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"]), name
        assert got["score"] == pytest.approx(want["score"], rel=REL_TOL), name


def test_errors_keep_the_json_shape_and_the_model_keeps_serving(endpoint: ContainerTarget) -> None:
    name = MODELS[0]
    assert load(endpoint, name, f"/opt/ml/models/{name}/model")[0] == 200

    status, error = call(endpoint, f"/models/{name}/invoke", {"inputs": {"question": "Who?"}})
    assert status == 400, error
    assert error["code"] == 400 and error["type"] == "BadRequest"
    assert "context" in error["message"]

    status, error = call(
        endpoint,
        f"/models/{name}/invoke",
        {"inputs": {"question": "Q?", "context": "C."}, "parameters": {"top_k": 0}},
    )
    assert status == 400 and "parameters.top_k" in error["message"], error

    case = first_case(name)
    status, got = call(endpoint, f"/models/{name}/invoke", case["request"])
    assert status == 200 and got["answer"] == case["expected"]["answer"], got


def test_unknown_unloaded_and_broken_models_are_clear_errors(endpoint: ContainerTarget) -> None:
    status, error = call(endpoint, "/models/nobody/invoke", {"inputs": {"question": "Q?", "context": "C."}})
    assert status == 404 and error["code"] == 404, error

    status, error = load(endpoint, "broken", "/opt/ml/models/broken/model")
    assert status >= 400, error
    status, listed = call(endpoint, "/models")
    assert "broken" not in [m["modelName"] for m in listed["models"]]

    name = MODELS[1]
    assert load(endpoint, name, f"/opt/ml/models/{name}/model")[0] == 200
    status, _ = call(endpoint, f"/models/{name}", method="DELETE")
    assert status == 200
    status, error = call(endpoint, f"/models/{name}/invoke", first_case(name)["request"])
    assert status == 404 and error["code"] == 404, error


def test_a_models_own_requirements_are_installed_when_it_loads(image: str, containers, tmp_path) -> None:
    """The AWS toolkits install only /opt/ml/model/code/requirements.txt, so models on their
    multi-model endpoints get no dependencies; here each model's own are installed as it loads."""
    name = "with-dependency"
    in_container = f"/opt/ml/models/{name}/model"
    model = model_with_dependency(model_dir(MODELS[0]), tmp_path / name, in_container)
    target = containers(
        image,
        None,
        {"SAGEMAKER_MULTI_MODEL": "true"},
        network="none",
        docker_args=("-v", f"{model}:{in_container}:ro"),
    )
    status, body = load(target, name, in_container)
    assert status == 200, f"{body}\n{target.logs()[-3000:]}"
    case = first_case(MODELS[0])
    status, got = call(target, f"/models/{name}/invoke", case["request"])
    assert status == 200, got
    assert got["marker"] == MARKER, got
    assert got["prediction"]["answer"] == case["expected"]["answer"], got
    # Each line of the worker's log once, as INFO (it went to stdout and stderr, the second as WARN).
    installed = [line for line in target.logs().splitlines() if "installed the user's requirements" in line]
    assert len(installed) == 1 and "[INFO ]" in installed[0], installed


def wait_unlisted(target: ContainerTarget, name: str, timeout_s: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        listed = [m["modelName"] for m in call(target, "/models")[1]["models"]]
        if name not in listed or time.monotonic() > deadline:
            return listed
        time.sleep(0.2)


def oom_killed(target: ContainerTarget) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.OOMKilled}}", target.name],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return state.stdout.strip() == "true"


def emf_records(logs: str) -> list[dict]:
    return [json.loads(line) for line in logs.splitlines() if line.startswith('{"_aws"')]


def test_a_load_that_would_not_fit_is_507_and_the_other_models_keep_serving(
    image: str, containers, tmp_path
) -> None:
    """SageMaker's multi-model contract: a load the container has no memory for answers 507 (then
    SageMaker unloads another model and loads again). Here 208 MB of weights, whose graph is made
    at load, in a 1.5 GB container that already serves a model. Each loaded model's memory is in
    its load line and, every second here, in an EMF metric."""
    small, big = MODELS[0], "wide"
    weights = wide_model(model_dir(small), tmp_path / big, layers=4)
    target = containers(
        image,
        None,
        {
            "SAGEMAKER_MULTI_MODEL": "true",
            "QA_CLOUDWATCH_EMF_NAMESPACE": "QATest",
            "QA_MODEL_MEMORY_REPORT_S": "1",
        },
        network="none",
        docker_args=(
            *("-v", f"{model_dir(small)}:/opt/ml/models/{small}/model:ro"),
            *("-v", f"{weights}:/opt/ml/models/{big}/model:ro"),
            *("--memory", "1536m", "--memory-swap", "1536m"),
        ),
    )
    assert load(target, small, f"/opt/ml/models/{small}/model")[0] == 200
    for attempt in range(2):  # SageMaker's retry must get 507 again, not 409 "already registered"
        status, body = load(target, big, f"/opt/ml/models/{big}/model")
        assert status == 507, f"attempt {attempt}: {status} {body}\n{target.logs()[-3000:]}"
        assert wait_unlisted(target, big) == [small], target.logs()[-3000:]

    case = first_case(small)
    status, got = call(target, f"/models/{small}/invoke", case["request"])
    assert status == 200 and got["answer"] == case["expected"]["answer"], got
    assert target.is_alive() and not oom_killed(target)
    logs = target.logs()
    refused = [line for line in logs.splitlines() if f"model {big} not loaded" in line]
    assert len(refused) == 2, logs[-3000:]
    assert re.search(
        r"the load needs about [\d,]+ MB and the container has [\d,]+ MB free \(of 1,536 MB\)", refused[0]
    )
    assert "qa.graphs export" in refused[0]
    loaded = re.search(rf"model {small} loaded from .* it holds ([\d,]+) MB", logs)
    assert loaded and int(loaded[1].replace(",", "")) > 50, logs[-3000:]

    records = [r for r in emf_records(logs) if r.get("Model") == small]
    assert records, logs[-3000:]
    for record in records:
        check_emf(record)
    assert records[-1]["ModelMemory"] > 50 << 20
    # Unloaded: its metric stops.
    assert call(target, f"/models/{small}", method="DELETE")[0] == 200
    time.sleep(2.5)
    reported = len([r for r in emf_records(target.logs()) if r.get("Model") == small])
    time.sleep(2.5)
    assert len([r for r in emf_records(target.logs()) if r.get("Model") == small]) == reported


def test_a_load_that_outgrows_its_estimate_is_the_one_the_kernel_stops(
    image: str, containers, tmp_path
) -> None:
    """A user's model_fn that takes memory until none is left (no estimate can see it): the
    kernel's OOM killer stops that load, not the bigger worker serving another model, nor MMS."""
    holder = holding_model(tmp_path / "holder", mb=700)
    hungry = hungry_model(tmp_path / "hungry")
    target = containers(
        image,
        None,
        {"SAGEMAKER_MULTI_MODEL": "true"},
        network="none",
        docker_args=(
            *("-v", f"{holder}:/opt/ml/models/holder/model:ro"),
            *("-v", f"{hungry}:/opt/ml/models/hungry/model:ro"),
            *("--memory", "1638m", "--memory-swap", "1638m"),
        ),
    )
    assert load(target, "holder", "/opt/ml/models/holder/model")[0] == 200
    status, body = load(target, "hungry", "/opt/ml/models/hungry/model")
    assert status >= 500, body  # MMS answers a worker that died while loading with 500
    assert wait_unlisted(target, "hungry") == ["holder"]
    status, got = call(target, "/models/holder/invoke", {"x": 1})
    assert (status, got) == (200, {"held_mb": 700}), target.logs()[-3000:]
    # By the same worker: MMS would have restarted a killed one, loading the model again.
    assert target.logs().count("model holder loaded from") == 1, target.logs()[-3000:]
    assert target.is_alive() and not oom_killed(target)


def test_with_json_logs_every_line_of_a_multi_model_endpoint_is_a_json_object(
    image: str, containers, tmp_path
) -> None:
    """QA_LOG_FORMAT=json reaches MMS too: its own log (docker/mms-log4j2-json.xml), its workers'
    lines (ours, passed on as they are, not wrapped) and what its command-line tool and JVM print
    outside any log configuration (the launcher's relay)."""
    name = MODELS[0]
    target = containers(
        image,
        None,
        {"SAGEMAKER_MULTI_MODEL": "true", "QA_LOG_FORMAT": "json"},
        network="none",
        docker_args=("-v", f"{model_dir(name)}:/opt/ml/models/{name}/model:ro"),
    )
    assert load(target, name, f"/opt/ml/models/{name}/model")[0] == 200
    case = first_case(name)
    assert call(target, f"/models/{name}/invoke", case["request"])[0] == 200
    assert call(target, f"/models/{name}/invoke", {"inputs": {"question": "Who?"}})[0] == 400
    assert call(target, f"/models/{name}", method="DELETE")[0] == 200
    assert target.stop() == 0
    records = []
    for line in filter(str.strip, target.logs().splitlines()):
        record = json.loads(line)  # fails on the first line that is not JSON
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record), line
        records.append(record)
    loggers = {r["logger"] for r in records}
    assert {"entrypoint", "com.amazonaws.ml.mms.ModelServer", "ACCESS_LOG", "multi-model-server"} <= loggers
    loaded = [r for r in records if r["logger"] == "serving.mms_service" and r.get("model") == name]
    assert len(loaded) == 1 and loaded[0]["model_memory_bytes"] > 50 << 20, loaded
    assert any(r["logger"] == "serving.mms_launch" and "after SIGTERM" in r["message"] for r in records)


def test_jvm_heap_follows_the_container_and_docker_stop_exits_0(endpoint: ContainerTarget) -> None:
    (argv,) = model_server_processes(endpoint).values()
    # The toolkit's default is -XX:-UseContainerSupport: a heap sized from the host's memory.
    assert "-XX:+UseContainerSupport" in argv and "-XX:-UseContainerSupport" not in argv, argv
    assert "-XX:MaxRAMPercentage=10" in argv, argv
    # Each model's queue follows single-model mode's rule (MMS reads MMS_* variables here).
    (pid,) = model_server_processes(endpoint)
    queue = container_python(
        endpoint,
        "import os\n"
        "from qa.cpu import cpu_class, cpu_flags\n"
        "from serving.settings import Settings, waiting_requests\n"
        f"env = dict(v.split('=', 1) for v in open('/proc/{pid}/environ').read().split('\\0') if '=' in v)\n"
        "print(env.get('MMS_JOB_QUEUE_SIZE'), waiting_requests(Settings.from_env(os.environ), cpu_class(cpu_flags())))\n",
    ).split()
    assert queue[0] == queue[1] and int(queue[0]) > 16, queue
    name = MODELS[0]
    assert load(endpoint, name, f"/opt/ml/models/{name}/model")[0] == 200

    started = time.monotonic()
    exit_code = endpoint.stop()
    elapsed = time.monotonic() - started
    assert exit_code == 0, f"exit code {exit_code} after docker stop:\n{endpoint.logs()[-3000:]}"
    assert elapsed < 30, f"docker stop took {elapsed:.1f} s (SageMaker kills at 30 s)"


def test_a_model_server_that_dies_takes_the_container_down(endpoint: ContainerTarget) -> None:
    """MMS killed (as the kernel's OOM killer would): the container exits non-zero, so that
    SageMaker replaces the instance, instead of living on without a server."""
    # Once the toolkit watches MMS (it installs its SIGCHLD handler then, up to a second after MMS
    # is up): killed before, MMS is a zombie the toolkit never looks for, until its start-up timeout.
    watching = (
        "import signal, time\n"
        "for _ in range(300):\n"
        "    caught = next(l for l in open('/proc/1/status') if l.startswith('SigCgt:'))\n"
        "    if int(caught.split()[1], 16) >> (signal.SIGCHLD - 1) & 1:\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "else:\n"
        "    raise SystemExit('the toolkit never installed its SIGCHLD handler')\n"
    )
    subprocess.run(["docker", "exec", endpoint.name, "python", "-c", watching], check=True, timeout=60)
    (pid,) = model_server_processes(endpoint)
    kill = f"import os, signal; os.kill({pid}, signal.SIGKILL)"
    subprocess.run(["docker", "exec", endpoint.name, "python", "-c", kill], check=True, timeout=30)
    exit_code = endpoint.wait_exit(60)
    assert exit_code == 5, f"exit code {exit_code}:\n{endpoint.logs()[-3000:]}"
    assert "exited without being asked to stop" in endpoint.logs()
