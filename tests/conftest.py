"""Shared test plumbing: the `server` fixture over run-time targets,
server logs attached to failing tests, and start-up times in the summary.

    pytest tests/http --targets host                 # the stack on this host
    pytest tests/http --image distilbert-qa:latest   # host and container (tests/container/target.py)
    pytest tests/http --image distilbert-qa:latest --slim-image distilbert-qa:slim   # and the slim image
    pytest tests/faults --targets container --image distilbert-qa:latest   # the fault suite on the image

The slim target serves the tiny model with graphs the full image (--image) made, as users ship
them. Without --image (or --slim-image) a container target is skipped with a loud reason, or fails
when QA_REQUIRE_CONTAINER=1 (CI: a skipped container run must not pass).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from targets import TINY_MODEL, start_host_target

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

TARGETS = ("host", "container", "slim")
STACK_KINDS = ("host", "container")
STARTUP_TIMES: list[tuple[str, float]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image", default=None, help="Docker image for the container target (the full image)")
    parser.addoption(
        "--slim-image", default=None, help="the slim image (./build.sh --slim), for the slim target"
    )
    parser.addoption(
        "--targets",
        default="host,container,slim",
        help="comma-separated targets for the HTTP suite: host, container, slim (the fault suite: host, container)",
    )


def _selected_targets(config: pytest.Config) -> list[str]:
    chosen = [t.strip() for t in config.getoption("--targets").split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown:
        raise pytest.UsageError(
            f"--targets: unknown target(s) {', '.join(unknown)}; use {', '.join(TARGETS)}"
        )
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("server", _selected_targets(metafunc.config), indirect=True, scope="session")
    if "stack_kind" in metafunc.fixturenames:
        # The fault suite (tests/faults): the host stack and the full image, which it drives from
        # outside (signals, docker exec); a test marked host-only by its `stack_kinds` runs on the host.
        allowed = getattr(metafunc.function, "stack_kinds", STACK_KINDS)
        kinds = [k for k in _selected_targets(metafunc.config) if k in allowed]
        params = [pytest.param(k, id=k, marks=[pytest.mark.container] if k != "host" else []) for k in kinds]
        metafunc.parametrize("stack_kind", params, scope="module")


def _image_or_skip(config: pytest.Config, option: str, build: str) -> str:
    image = config.getoption(option)
    if not image:
        reason = f"CONTAINER TARGET NOT RUN: no {option} given (build one with {build}, then pass {option} NAME:TAG)"
        if os.environ.get("QA_REQUIRE_CONTAINER") == "1":
            pytest.fail(reason + "; QA_REQUIRE_CONTAINER=1 makes this a failure")
        pytest.skip(reason)
    return image


def _load_container_target():
    path = TESTS / "container" / "target.py"
    spec = importlib.util.spec_from_file_location("qa_container_target", path)
    if spec is None or spec.loader is None or not path.is_file():
        pytest.fail(f"--image was given but {path} does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def target_image(request: pytest.FixtureRequest) -> str:
    """The full image (--image) for a container target; skips (or fails in CI) without one."""
    return _image_or_skip(request.config, "--image", "./build.sh")


@pytest.fixture(scope="session")
def container_target():
    """tests/container/target.py: ContainerTarget, start_container_target, model_with_graphs."""
    return _load_container_target()


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A running stack serving the tiny model, shared by the whole HTTP suite for one target."""
    kind = request.param
    if kind == "host":
        target = start_host_target(TINY_MODEL, tmp_path_factory.mktemp("host-target"))
        STARTUP_TIMES.append(("host target, HTTP suite", target.ready_after_s))
    else:
        image = _image_or_skip(request.config, "--image", "./build.sh")
        container = _load_container_target()
        model = TINY_MODEL
        if kind == "slim":
            slim_image = _image_or_skip(request.config, "--slim-image", "./build.sh --slim")
            model = container.model_with_graphs(
                image, TINY_MODEL, tmp_path_factory.mktemp("slim-target") / "model", ("fp32",)
            )
            image = slim_image
        target = container.start_container_target(image, model, {})
        STARTUP_TIMES.append((f"{kind} container target, HTTP suite", target.ready_after_s))
    yield target
    target.stop()


@pytest.fixture(scope="session")
def startup_times() -> list[tuple[str, float]]:
    """(label, seconds) pairs printed in the terminal summary."""
    return STARTUP_TIMES


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed:
        server = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        # `server` (the HTTP suite) or the stacks a fault test started (tests/faults/conftest.py)
        for target in [server] if server is not None else getattr(item, "qa_stacks", []):
            report.sections.append(
                ("server logs (last 200 lines)", "\n".join(target.logs().splitlines()[-200:]))
            )
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if STARTUP_TIMES:
        terminalreporter.section("start-up time to the first 200 on /ping")
        for label, seconds in STARTUP_TIMES:
            terminalreporter.write_line(f"{label}: {seconds:.2f} s")
