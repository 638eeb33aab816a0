"""The built image as SageMaker runs it: `docker run IMAGE serve`, `docker stop`, a read-only root,
`train`, labels, what is (not) inside, and start-up failures that show their logs.

The HTTP behaviour itself is the HTTP suite's job (tests/http, run against this image through
tests/container/target.py); these tests cover what only a container has.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import requests
from target import CONTAINER_MODEL_DIR, ContainerTarget
from targets import TINY_MODEL, ServerDied
from user_code import MARKER, model_with_dependency

pytestmark = pytest.mark.container

QUESTION = {
    "inputs": {"question": "Who wrote the notes?", "context": "Ada Lovelace wrote the notes in 1843."}
}


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def assert_answers(target: ContainerTarget) -> None:
    resp = requests.post(f"{target.base_url}/invocations", json=QUESTION, timeout=30)
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"score", "start", "end", "answer"}


def test_labels_and_run_config(image: str) -> None:
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert labels["org.opencontainers.image.title"] == "distilbert-qa"
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"]), labels
    assert labels["org.opencontainers.image.version"]
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "/opt/program/entrypoint.py"]
    assert config["Cmd"] == ["serve"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["User"] in ("", "root", "0"), "SageMaker runs the container as root"


def test_no_build_tools_caches_or_wheels_inside(image: str) -> None:
    # Any first argument but serve/train is run as a command (handy for debugging): this uses that.
    script = (
        "for tool in gcc cc g++ make; do command -v $tool && echo FOUND-$tool; done; "
        "ls -A /root/.cache /tmp/wheelhouse 2>/dev/null; ls -A /var/lib/apt/lists | grep -v '^lock$\\|^partial$'; "
        "/opt/venv/bin/python -c 'import torch, transformers, falcon, gunicorn; print(torch.__version__)'"
    )
    out = docker("run", "--rm", "--network", "none", image, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("+cpu"), f"expected only the CPU torch version, got:\n{out.stdout}"
    assert out.stdout.strip().count("\n") == 0, f"unexpected files or tools in the image:\n{out.stdout}"


def test_serve_answers_on_8080_with_sagemaker_defaults(image: str, containers) -> None:
    """`docker run IMAGE serve` with nothing set: 0.0.0.0:8080 inside the container's own network
    namespace (--network none), queried over its loopback, so the host's 8080 does not matter."""
    target = containers(image, TINY_MODEL, network="none")
    listening = docker("exec", target.name, "cat", "/proc/net/tcp").stdout
    # 00000000:1F90 is 0.0.0.0:8080; state 0A is LISTEN.
    assert re.search(r"^\s*\d+: 00000000:1F90 00000000:0000 0A ", listening, re.M), listening
    status, body = target.http_in_container("/invocations", json.dumps(QUESTION).encode())
    assert status == 200, body
    assert json.loads(body)["answer"]


def test_docker_stop_exits_0_within_30s(image: str, containers) -> None:
    target = containers(image, TINY_MODEL)
    assert_answers(target)
    started = time.monotonic()
    exit_code = target.stop()
    elapsed = time.monotonic() - started
    assert exit_code == 0, f"exit code {exit_code} after docker stop"
    assert elapsed < 30, f"docker stop took {elapsed:.1f} s (SageMaker kills at 30 s)"
    assert docker("ps", "-a", "--filter", f"name=^{target.name}$", "-q").stdout.strip() == ""


def test_model_code_requirements_are_installed_before_its_hooks(image: str, containers, tmp_path) -> None:
    """`code/requirements.txt` in the model is pip-installed at start-up, before `code/inference.py`
    (which imports the package it names) is loaded."""
    model = model_with_dependency(TINY_MODEL, tmp_path / "model", CONTAINER_MODEL_DIR)
    target = containers(image, model)
    resp = requests.post(f"{target.base_url}/invocations", json=QUESTION, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["marker"] == MARKER, resp.text
    assert resp.json()["prediction"]["answer"], resp.text


def test_read_only_root_with_tmpfs(image: str, containers) -> None:
    target = containers(image, TINY_MODEL, docker_args=("--read-only", "--tmpfs", "/tmp"))
    assert_answers(target)
    assert target.stop() == 0


def processes(target: ContainerTarget) -> list[tuple[int, int, int, str]]:
    """(uid, pid, ppid, command) of every process in the container, as `docker top` shows them."""
    out = docker("top", target.name, "-eo", "uid,pid,ppid,args")
    assert out.returncode == 0, out.stderr
    rows = []
    for line in out.stdout.splitlines()[1:]:
        uid, pid, ppid, args = line.split(None, 3)
        rows.append((int(uid), int(pid), int(ppid), args))
    return rows


def test_no_request_handling_process_runs_as_root(image: str, containers) -> None:
    target = containers(image, TINY_MODEL, docker_args=("--read-only", "--tmpfs", "/tmp"))
    assert_answers(target)
    rows = processes(target)
    nginx_workers = [r for r in rows if "nginx: worker process" in r[3]]
    gunicorn = [r for r in rows if "gunicorn" in r[3]]
    master = [r for r in gunicorn if r[2] not in {g[1] for g in gunicorn}]
    workers = [r for r in gunicorn if r not in master]
    assert nginx_workers and workers and len(master) == 1, rows
    # The supervisor and the two masters keep root (SageMaker starts the container as root);
    # everything that reads request bytes runs as the image's `qa` user (uid 10001).
    assert {r[0] for r in nginx_workers + workers} == {10001}, rows
    assert master[0][0] == 0, rows
    assert target.stop() == 0


def test_a_model_only_root_can_read_is_served_by_root_workers_with_a_warning(
    image: str, containers, tmp_path
) -> None:
    model = tmp_path / "owner-only"
    model.mkdir(mode=0o755)
    for path in TINY_MODEL.iterdir():
        if path.is_file():
            (model / path.name).write_bytes(path.read_bytes())
            (model / path.name).chmod(0o600)
    target = containers(image, model)
    assert_answers(target)
    assert "not readable by qa" in target.logs() and "chmod -R a+rX" in target.logs()
    workers = [r for r in processes(target) if "nginx: worker process" in r[3]]
    assert workers and {r[0] for r in workers} == {0}


def test_train_fails_clearly(image: str) -> None:
    out = docker("run", "--rm", "--network", "none", image, "train")
    assert out.returncode != 0
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and "only serves" in lines[0], lines


def test_start_up_failure_fails_fast_with_logs(image: str, containers, tmp_path) -> None:
    """No model anywhere: the container exits, the wait fails at once (not at its deadline) and
    the error carries the container's logs; the container is gone afterwards."""
    empty = tmp_path / "empty-model"
    empty.mkdir()
    target = containers(image, empty, {"QA_BAKED_MODEL_DIR": "/nonexistent"}, wait=False)
    started = time.monotonic()
    with pytest.raises(ServerDied) as failure:
        target.wait_ready(deadline_s=120)
    assert time.monotonic() - started < 60
    message = str(failure.value)
    assert "start-up failed" in message and "/opt/ml/model" in message, message
    assert target.stop() != 0
    assert docker("ps", "-a", "--filter", f"name=^{target.name}$", "-q").stdout.strip() == ""
