"""Fixtures for the container-only tests: the images under test (--image, --slim-image), containers that are
always removed, their logs attached to a failing test, and start-up times in the summary.

Without them these tests skip, or fail when QA_REQUIRE_CONTAINER=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from target import ContainerTarget


def require_or_skip(reason: str) -> None:
    if os.environ.get("QA_REQUIRE_CONTAINER") == "1":
        pytest.fail(f"{reason}; QA_REQUIRE_CONTAINER=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if shutil.which("docker") is None:
        require_or_skip("CONTAINER TESTS NOT RUN: the docker CLI is not installed")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        require_or_skip("CONTAINER TESTS NOT RUN: no Docker engine answers (is dockerd running?)")


def local_image(request: pytest.FixtureRequest, option: str, build_hint: str) -> str:
    """The image named by `option`, which must be in the local Docker engine (or the tests skip)."""
    name = request.config.getoption(option, default=None)
    if not name:
        require_or_skip(
            f"CONTAINER TESTS NOT RUN: no {option} given ({build_hint}, then pass {option} NAME:TAG)"
        )
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode != 0:
        pytest.fail(f"{option} {name}: no such image in the local Docker engine")
    return name


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest, docker_engine: None) -> str:
    return local_image(request, "--image", "build one with ./build.sh")


@pytest.fixture(scope="session")
def slim_image(request: pytest.FixtureRequest, docker_engine: None) -> str:
    return local_image(request, "--slim-image", "build one with ./build.sh --slim")


@pytest.fixture
def containers(request: pytest.FixtureRequest, startup_times: list[tuple[str, float]]):
    """Starts ContainerTargets for one test and stops (and so removes) them all afterwards."""
    started: list[ContainerTarget] = []
    request.node.qa_containers = started

    def start(
        image: str, model_dir: Path | None, env: dict[str, str] | None = None, *, wait: bool = True, **kwargs
    ):
        target = ContainerTarget(image, model_dir, env, **kwargs)
        started.append(target)
        target.start()
        if wait:
            target.wait_ready()
            startup_times.append((f"container, {request.node.name}", target.ready_after_s))
        return target

    yield start
    for target in started:
        target.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        for target in getattr(item, "qa_containers", []):
            tail = "\n".join(target.logs().splitlines()[-200:])
            report.sections.append((f"container {target.name} logs (last 200 lines)", tail))
    return report
