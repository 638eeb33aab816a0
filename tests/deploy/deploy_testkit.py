"""Shared bits of the deploy tests: constants, and running `python -m deploy` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/qa-serving:abc1234"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"


def create_args(role: str = ROLE, *extra: str) -> list[str]:
    """`create` of endpoint qa from IMAGE and model data in S3, then `extra` options."""
    return [
        "create",
        "--name",
        "qa",
        "--image",
        IMAGE,
        "--role",
        role,
        "--model-data",
        "s3://m/model.tar.gz",
        *extra,
    ]


def offline_env(tmp: Path) -> dict[str, str]:
    """The caller's environment without any AWS settings, and no config files to fall back on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def run_deploy(
    args: list[str], env: dict[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
