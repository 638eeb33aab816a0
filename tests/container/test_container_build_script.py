"""build.sh end to end: argument and environment errors, baking a model, pushing to a real
registry on 127.0.0.1 (Debian's docker-registry), and the ECR path against moto in server mode.

Each build here reuses Docker's layer cache of the image under test (same Dockerfile, same
wheels), so a build costs seconds; every tag made here is removed afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests
from subprocesses import run_captured
from targets import FIXTURE_MODELS, ROOT, TINY_MODEL, free_port

pytestmark = pytest.mark.container

BUILD_SH = ROOT / "build.sh"
MOTO_ACCOUNT = "123456789012"
REGION = "us-east-1"


def run_build(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return run_captured(["bash", str(BUILD_SH), *args], env=full_env, cwd=ROOT, timeout=timeout)


@contextlib.contextmanager
def serving(name: str, command: list[str], log_path: Path, url: str, ok_status: int | None = None):
    """`command` running (its output in log_path) from the time `url` answers (with ok_status, if
    given; 30 s at most) to the end of the with block."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    status = requests.get(url, timeout=2).status_code
                    if ok_status is None or status == ok_status:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, f"{name} did not answer within 30 s"
                time.sleep(0.2)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def explain(out: subprocess.CompletedProcess) -> str:
    return f"exit {out.returncode}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-6000:]}"


@pytest.fixture
def scratch_tags():
    """A unique image name for one test; every tag of it (local or registry-prefixed) is removed after."""
    name = f"qa-build-test-{uuid.uuid4().hex[:10]}"
    yield name
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    mine = [ref for ref in listed if ref.rsplit(":", 1)[0].endswith(name)]
    if mine:
        subprocess.run(["docker", "image", "rm", *mine], capture_output=True, check=False)


def test_help_describes_every_option() -> None:
    out = run_build("--help")
    assert out.returncode == 0, explain(out)
    for option in (
        "--slim",
        "--tag",
        "--model",
        "--model-id",
        "--no-model",
        "--push",
        "--region",
        "--registry",
        "--ca-bundle",
    ):
        assert option in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "/nonexistent"), "no config.json"),
        (("--model", str(TINY_MODEL), "--no-model"), "--no-model excludes"),
        (("--ca-bundle", "/etc/hostname"), "--ca-bundle is for --online"),
        (("--push", "--registry", "127.0.0.1:1"), "exclude each other"),
        (("--frobnicate",), "unknown argument"),
    ],
)
def test_bad_arguments_fail_before_building(args: tuple[str, ...], message: str) -> None:
    out = run_build(*args)
    assert out.returncode != 0 and message in out.stderr, explain(out)


def test_no_docker_engine_is_a_clear_error(docker_engine: None) -> None:
    out = run_build("--no-model", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert out.returncode == 1 and "cannot reach a Docker engine" in out.stderr, explain(out)


# ---- baking ----------------------------------------------------------------------------------------


def test_baked_model_is_served_and_opt_ml_model_wins(image: str, containers, scratch_tags: str) -> None:
    baked = FIXTURE_MODELS / "distilbert-tiny-s1"
    out = run_build("--tag", f"{scratch_tags}:baked", "--model", str(baked))
    assert out.returncode == 0, explain(out)
    tag = f"{scratch_tags}:baked"

    alone = containers(tag, None)
    assert requests.get(f"{alone.base_url}/ping", timeout=5).status_code == 200
    assert "/opt/program/model" in alone.logs()
    # build.sh made every precision's graphs in the image: start-up reuses them, whatever the CPU's plan.
    assert "using the graph /opt/program/model/graphs/qa-fp32-" in alone.logs()
    int8 = containers(tag, None, {"QA_PRECISION": "int8"})
    assert (
        "using the graph /opt/program/model/graphs/qa-int8-" in int8.logs() and "made the" not in int8.logs()
    )
    assert int8.stop() == 0

    mounted = containers(tag, TINY_MODEL)
    assert "serving the model in /opt/ml/model" in mounted.logs()
    assert alone.stop() == 0 and mounted.stop() == 0


def test_slim_bakes_a_model_with_graphs_the_full_image_made(
    slim_image: str, containers, scratch_tags: str
) -> None:
    out = run_build("--slim", "--tag", f"{scratch_tags}:slim-baked", "--model", str(TINY_MODEL))
    assert out.returncode == 0, explain(out)
    tag = f"{scratch_tags}:slim-baked"
    probe = "import importlib.util; print(importlib.util.find_spec('torch'))"
    found = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", probe], capture_output=True, text=True
    )
    assert found.stdout.strip() == "None", found  # the slim image under the model, not the full one

    int8 = containers(tag, None, {"QA_PRECISION": "int8"})
    assert "using the graph /opt/program/model/graphs/qa-int8-" in int8.logs(), int8.logs()[-3000:]
    assert int8.stop() == 0


# ---- push to a real registry -----------------------------------------------------------------------


@pytest.fixture
def local_registry(tmp_path: Path, docker_engine: None):
    """Debian's docker-registry (distribution 2.x) on a free 127.0.0.1 port, storage in tmp."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail(
            "docker-registry is not installed (Debian: apt-get install docker-registry); .ci/run installs it"
        )
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    host = f"127.0.0.1:{port}"
    command = [binary, "serve", str(config)]
    with serving("docker-registry", command, tmp_path / "registry.log", f"http://{host}/v2/", ok_status=200):
        yield host


def test_push_to_a_registry_on_loopback(image: str, local_registry: str, scratch_tags: str) -> None:
    """Both tags land in the registry, the digest there is the local image's, and the image pulls back."""
    out = run_build(
        "--tag",
        f"{scratch_tags}:v1",
        "--tag",
        f"{scratch_tags}:latest",
        "--no-model",
        "--registry",
        local_registry,
    )
    assert out.returncode == 0, explain(out)
    uri = f"{local_registry}/{scratch_tags}:v1"
    assert out.stdout.strip().splitlines()[-1] == uri, explain(out)

    tags = requests.get(f"http://{local_registry}/v2/{scratch_tags}/tags/list", timeout=10).json()["tags"]
    assert sorted(tags) == ["latest", "v1"]
    manifest = requests.head(
        f"http://{local_registry}/v2/{scratch_tags}/manifests/v1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    local_digests = json.loads(
        subprocess.run(["docker", "image", "inspect", uri], capture_output=True, text=True).stdout
    )[0]["RepoDigests"]
    assert f"{local_registry}/{scratch_tags}@{manifest.headers['Docker-Content-Digest']}" in local_digests

    image_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", uri], capture_output=True, text=True
    ).stdout
    subprocess.run(["docker", "image", "rm", uri], capture_output=True, check=True)
    pulled = subprocess.run(["docker", "pull", uri], capture_output=True, text=True, timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    assert (
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Id}}", uri], capture_output=True, text=True
        ).stdout
        == image_id
    )


def test_push_failure_is_a_clear_error(image: str, scratch_tags: str) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    out = run_build("--tag", f"{scratch_tags}:v1", "--no-model", "--registry", closed)
    assert out.returncode == 1, explain(out)
    assert f"push of {closed}/{scratch_tags}:v1 failed" in out.stderr, explain(out)


# ---- ECR, against moto ------------------------------------------------------------------------------

DOCKER_SHIM = """#!/usr/bin/env bash
# Stands in for docker login/push to *.amazonaws.com (not reachable from tests); records them.
case "$1" in
    login) echo "login ${*:2}" >>"$SHIM_LOG"; echo "password $(cat)" >>"$SHIM_LOG"; echo "Login Succeeded"; exit 0 ;;
    push) if [[ "$2" == *.amazonaws.com/* ]]; then
              echo "push $2" >>"$SHIM_LOG"
              if [[ -n "${SHIM_PUSH_FAILS:-}" ]]; then echo "denied: not authorized" >&2; exit 1; fi
              exit 0
          fi ;;
esac
exec REAL_DOCKER "$@"
"""


@pytest.fixture
def moto_server(tmp_path: Path):
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.fail(f"{binary} not found: install requirements-dev.txt (moto[server])")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(binary), "-H", "127.0.0.1", "-p", str(port)]
    with serving("moto_server", command, tmp_path / "moto.log", f"{url}/moto-api/"):
        yield url


def aws_env(tmp_path: Path, endpoint: str | None, client: str) -> dict[str, str]:
    """An environment for build.sh with only the given AWS setup; `client` picks the aws CLI or
    boto3 (scripts/ecr.py) by what is on PATH; a docker shim goes first on PATH."""
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir(exist_ok=True)
    shim = shim_dir / "docker"
    shim.write_text(DOCKER_SHIM.replace("REAL_DOCKER", shutil.which("docker")))
    shim.chmod(0o755)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p]
    if client == "boto3":
        path = [p for p in path if not (Path(p) / "aws").exists()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PATH=os.pathsep.join([str(shim_dir), *path]),
        PYTHON=sys.executable,
        SHIM_LOG=str(tmp_path / "shim.log"),
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    if endpoint:
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    return env


ECR_CLIENTS = ["boto3"] + (["aws-cli"] if shutil.which("aws") else [])


@pytest.mark.parametrize("client", ECR_CLIENTS)
def test_ecr_push_without_credentials_fails_before_building(
    client: str, tmp_path: Path, docker_engine: None
) -> None:
    env = aws_env(tmp_path, None, client)
    out = subprocess.run(
        ["bash", str(BUILD_SH), "--no-model", "--push", "--region", REGION],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1, explain(out)
    assert "could not read the AWS account from STS" in out.stderr, explain(out)
    assert "Sending build context" not in out.stdout + out.stderr


@pytest.mark.parametrize("client", ECR_CLIENTS)
def test_ecr_push_against_moto(
    client: str, image: str, moto_server: str, scratch_tags: str, tmp_path: Path
) -> None:
    """What is checked: the account comes from STS, the repository is created once with
    scan-on-push, `docker login` gets user AWS, the password ECR issued (via --password-stdin) and
    the account's registry host, both tags are pushed to that registry, the URI is printed last,
    and a failed push is a clear error.
    Not covered (moto's registry host is not a registry): that real ECR accepts that login and
    the layers, IAM permissions, and scan results. The push itself is covered by the loopback
    registry test above."""
    env = aws_env(tmp_path, moto_server, client)
    registry = f"{MOTO_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    args = [
        "bash",
        str(BUILD_SH),
        "--tag",
        f"{scratch_tags}:v1",
        "--tag",
        f"{scratch_tags}:latest",
        "--no-model",
        "--push",
    ]
    out = subprocess.run(
        [*args, "--region", REGION], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900
    )
    assert out.returncode == 0, explain(out)
    assert out.stdout.strip().splitlines()[-1] == f"{registry}/{scratch_tags}:v1", explain(out)
    assert f"ECR repository {scratch_tags}: created" in out.stderr

    ecr = boto3.client(
        "ecr",
        endpoint_url=moto_server,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    repo = ecr.describe_repositories(repositoryNames=[scratch_tags])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    token = base64.b64decode(
        ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    ).decode()
    assert (tmp_path / "shim.log").read_text().splitlines() == [
        f"login --username AWS --password-stdin {registry}",
        f"password {token.removeprefix('AWS:')}",
        f"push {registry}/{scratch_tags}:v1",
        f"push {registry}/{scratch_tags}:latest",
    ]

    # Region from AWS_REGION; the repository now exists; a refused push is a clear error.
    again = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**env, "AWS_REGION": REGION, "SHIM_PUSH_FAILS": "1"},
        cwd=ROOT,
        timeout=900,
    )
    assert again.returncode == 1, explain(again)
    assert f"ECR repository {scratch_tags}: exists" in again.stderr
    assert f"push of {registry}/{scratch_tags}:v1 failed" in again.stderr, explain(again)
