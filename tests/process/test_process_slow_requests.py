"""Readiness, waiting past the time budget and SIGTERM draining, with user code that blocks on gate files."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from process_helpers import make_slow_model_dir, wait_for
from targets import HostTarget

pytestmark = pytest.mark.slow

BLOCK = b'{"block": true}'
QUICK = b'{"block": false}'


def post(target, body: bytes, request_id: str, timeout_s: float = 60):
    return requests.post(
        f"{target.base_url}/invocations",
        data=body,
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        timeout=timeout_s,
    )


def assert_error_shape(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "type", "message"} and body["code"] == status
    return body


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory):
    """One worker serving two at once, a 5 s budget; model_fn held until the readiness test releases it."""
    root = tmp_path_factory.mktemp("slow-stack")
    model_dir, gates = make_slow_model_dir(root)
    (gates / "hold-load").touch()
    target = HostTarget(
        model_dir,
        root,
        {
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            "QA_THREADS_PER_WORKER": "2",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "5",
        },
    ).start()
    target.gates = gates
    yield target
    (gates / "release-load").touch()
    (gates / "release-requests").touch()
    target.stop()


def ensure_ready(target) -> None:
    (target.gates / "release-load").touch()
    target.wait_ready(120)


def test_ping_is_503_until_the_model_loaded(slow_stack):
    if (slow_stack.gates / "release-load").exists():
        pytest.skip("the model was already released by another test")

    def first_answer():
        try:
            return requests.get(f"{slow_stack.base_url}/ping", timeout=2)
        except requests.ConnectionError:
            return None

    wait_for(lambda: first_answer() is not None, 120, "nginx to answer", slow_stack)
    for _ in range(3):
        started = time.monotonic()
        ping = requests.get(f"{slow_stack.base_url}/ping", timeout=2)
        assert time.monotonic() - started < 2.0
        assert_error_shape(ping, 503)
        assert ping.headers["Retry-After"].isdigit()
    early = post(slow_stack, QUICK, "early")
    assert_error_shape(early, 503)
    assert "Retry-After" in early.headers
    (slow_stack.gates / "release-load").touch()
    slow_stack.wait_ready(60)
    assert post(slow_stack, QUICK, "after-ready").status_code == 200


def test_over_budget_is_504_and_a_request_that_waited_out_its_budget_never_runs(slow_stack):
    """Both threads held past the 5 s budget: they answer 504; a third request waits meanwhile (no
    fast refusal: its wait may fit), and once a worker takes it its budget is spent: 503 with
    Retry-After, without reaching the user code; /ping answers 200 throughout."""
    ensure_ready(slow_stack)
    gates = slow_stack.gates
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, slow_stack, BLOCK, "block-1")
        second = pool.submit(post, slow_stack, BLOCK, "block-2")
        wait_for(
            lambda: (gates / "received-block-1").exists() and (gates / "received-block-2").exists(),
            30,
            "both blocked requests",
        )
        waiting = pool.submit(post, slow_stack, QUICK, "waiting")
        started = time.monotonic()
        ping = requests.get(f"{slow_stack.base_url}/ping", timeout=2)
        ping_s = time.monotonic() - started
        timed_out = [first.result(), second.result()]
        dropped = waiting.result()
    assert "waited" in assert_error_shape(dropped, 503)["message"]
    assert dropped.headers["Retry-After"] == "1"
    assert not (gates / "received-waiting").exists(), "a request past its budget reached the user code"
    assert ping.status_code == 200 and ping_s < 2.0
    for response in timed_out:
        assert "5 s" in assert_error_shape(response, 504)["message"]
    # The timed-out work still holds its threads until it really ends.
    (gates / "release-requests").touch()
    wait_for(lambda: post(slow_stack, QUICK, "after").status_code == 200, 30, "slots to free up", slow_stack)


def test_sigterm_drains_the_request_in_flight_then_exits_0(tmp_path):
    model_dir, gates = make_slow_model_dir(tmp_path)
    target = HostTarget(model_dir, tmp_path, {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}).start()
    try:
        target.wait_ready()
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(post, target, BLOCK, "in-flight")
            wait_for(
                lambda: (gates / "entered-in-flight").exists(), 30, "the request to reach predict_fn", target
            )
            target.signal(signal.SIGTERM)
            sent = time.monotonic()
            wait_for(lambda: "draining" in target.logs(), 10, "the supervisor to start draining", target)
            (gates / "release-requests").touch()
            response = in_flight.result(timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["answer"] == "done"
        code = target.wait_exit(30)
        took = time.monotonic() - sent
        assert code == 0, target.logs()
        assert took < 25, f"stopping took {took:.1f} s"
        assert "stopped cleanly" in target.logs()
    finally:
        target.stop()
