"""A real moto server (the local AWS API stand-in) on a free 127.0.0.1 port, with fresh state
per test, and the environment that points `python -m deploy` at it with dummy credentials:
never the real AWS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import requests
from deploy_testkit import REGION, offline_env

from bench.loopback import NotReady, ServerDied, free_port, wait_until_ready

MOTO_SERVER = Path(sys.executable).with_name("moto_server")


def _answers(url: str) -> bool:
    try:
        requests.get(f"{url}/moto-api/", timeout=1)
    except requests.ConnectionError:
        return False
    return True


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} missing: pip install 'moto[server]'")
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        failure = None
        try:
            wait_until_ready(lambda: _answers(url), 30, alive=lambda: proc.poll() is None)
        except ServerDied:
            failure = f"moto_server exited {proc.returncode}"
        except NotReady:
            failure = "moto_server not answering after 30 s"
        if failure:
            pytest.fail(f"{failure}:\n{log_path.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def aws(moto_url, tmp_path):
    """Fresh moto state; `aws.client(name)` for checks, `aws.env` for the CLI subprocess."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    env = offline_env(tmp_path)
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": REGION,
        }
    )

    class Aws:
        url = moto_url

        def __init__(self):
            self.env = env

        @staticmethod
        def client(service: str):
            return boto3.client(
                service,
                endpoint_url=moto_url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )

    return Aws()


@pytest.fixture
def offline(tmp_path):
    """Environment for the CLI with no AWS configuration at all."""
    return offline_env(tmp_path)
