"""Shared test plumbing: the repository on sys.path, the `server` fixture over run-time targets,
server logs attached to failing tests, and start-up times in the summary.

    pytest tests/http --targets host                 # the stack on this host
    pytest tests/http --image distilbert-qa:latest   # host and container (tests/container/target.py)

Without --image the container target is skipped with a loud reason, or fails when
QA_REQUIRE_CONTAINER=1 (CI: a skipped container run must not pass).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# `tests` itself is not importable by package name here (the dev venv has a site-packages `tests`).
for path in (ROOT, TESTS):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from targets import TINY_MODEL, start_host_target  # noqa: E402

TARGETS = ("host", "container")
STARTUP_TIMES: list[tuple[str, float]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image", default=None, help="Docker image for the container target")
    parser.addoption(
        "--targets",
        default="host,container",
        help="comma-separated targets for the HTTP suite: host, container",
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


def _load_container_target():
    path = TESTS / "container" / "target.py"
    spec = importlib.util.spec_from_file_location("qa_container_target", path)
    if spec is None or spec.loader is None or not path.is_file():
        pytest.fail(f"--image was given but {path} does not exist")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A running stack serving the tiny model, shared by the whole HTTP suite for one target."""
    kind = request.param
    if kind == "host":
        target = start_host_target(TINY_MODEL, tmp_path_factory.mktemp("host-target"))
        STARTUP_TIMES.append(("host target, HTTP suite", target.ready_after_s))
    else:
        image = request.config.getoption("--image")
        if not image:
            reason = "CONTAINER TARGET NOT RUN: no --image given (build one with ./build.sh, then pass --image NAME:TAG)"
            if os.environ.get("QA_REQUIRE_CONTAINER") == "1":
                pytest.fail(reason + "; QA_REQUIRE_CONTAINER=1 makes this a failure")
            pytest.skip(reason)
        target = _load_container_target().start_container_target(image, TINY_MODEL, {})
        STARTUP_TIMES.append(("container target, HTTP suite", target.ready_after_s))
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
        target = item.funcargs.get("server") if hasattr(item, "funcargs") else None
        if target is not None:
            report.sections.append(
                ("server logs (last 200 lines)", "\n".join(target.logs().splitlines()[-200:]))
            )
    return report


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if STARTUP_TIMES:
        terminalreporter.section("start-up time to the first 200 on /ping")
        for label, seconds in STARTUP_TIMES:
            terminalreporter.write_line(f"{label}: {seconds:.2f} s")
