"""Start-up time, child deaths, failed start-ups and the other entrypoint commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from process_helpers import child_pid, children_of, pid_alive, wait_for
from targets import ROOT, TINY_MODEL, HostTarget

ENTRYPOINT = ROOT / "entrypoint.py"
QUESTION = {"inputs": {"question": "Where is the harbour?", "context": "The harbour lies south of the town."}}


def invoke(target) -> requests.Response:
    return requests.post(f"{target.base_url}/invocations", json=QUESTION, timeout=30)


def run_entrypoint(
    args: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "QA_", "HF_"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, str(ENTRYPOINT), *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    target = HostTarget(
        TINY_MODEL, tmp_path_factory.mktemp("lifecycle"), {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    ).start()
    target.wait_ready()
    yield target
    target.stop()


def test_startup_time_to_first_200(stack, record_property, startup_times):
    seconds = stack.ready_after_s
    startup_times.append(("host, tiny model, 1 worker (process tests)", seconds))
    record_property("startup_to_first_ping_200_s", round(seconds, 2))
    print(f"\nstart-up time to the first 200 on /ping: {seconds:.2f} s")
    assert seconds < 120


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_ping_recovers(stack):
    expected = invoke(stack).json()
    master = child_pid(stack.proc.pid, "gunicorn")
    (worker,) = children_of(master)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: children_of(master) and children_of(master) != [worker], 30, "a new worker", stack)
    stack.wait_ready(120)
    assert invoke(stack).json() == expected
    assert stack.is_alive()


@pytest.mark.slow
@pytest.mark.parametrize("child, exit_code", [("nginx", 3), ("gunicorn", 4)])
def test_a_dead_child_stops_the_stack_with_its_exit_code(tmp_path, child, exit_code):
    target = HostTarget(TINY_MODEL, tmp_path, {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}).start()
    try:
        target.wait_ready()
        victim = child_pid(target.proc.pid, child)
        others = [pid for pid in children_of(target.proc.pid) if pid != victim]
        os.kill(victim, signal.SIGKILL)
        assert target.wait_exit(30) == exit_code, target.logs()
        assert f"{child} exited unexpectedly (signal SIGKILL)" in target.logs()
        wait_for(lambda: not any(pid_alive(pid) for pid in others), 10, "the other child to stop")
    finally:
        target.stop()


@pytest.mark.slow
def test_a_model_that_fails_to_load_exits_non_zero_with_a_clear_log(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "distilbert"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    (broken / "tokenizer.json").write_text("{}")
    target = HostTarget(broken, tmp_path / "work", {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}).start()
    try:
        code = target.wait_exit(120)
        logs = target.logs()
        assert code != 0
        assert "model failed to load" in logs
        assert "gunicorn exited unexpectedly" in logs
    finally:
        target.stop()


def test_conflicting_user_hooks_fail_at_start_up(tmp_path):
    model_dir = tmp_path / "model"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(b"x")
    (model_dir / "code" / "inference.py").write_text(
        "def transform_fn(model, body, content_type, accept):\n    return body\n\n"
        "def predict_fn(data, model):\n    return data\n"
    )
    started = time.monotonic()
    result = run_entrypoint(["serve"], {"QA_MODEL_DIR": str(model_dir), "QA_RUN_DIR": str(tmp_path / "run")})
    assert result.returncode == 6  # serving/exit_codes.py: STARTUP_ERROR
    assert "transform_fn" in result.stderr and "predict_fn" in result.stderr
    assert time.monotonic() - started < 60


def test_no_model_anywhere_fails_with_a_clear_message(tmp_path):
    result = run_entrypoint(
        ["serve"],
        {
            "QA_MODEL_DIR": str(tmp_path / "empty"),
            "QA_BAKED_MODEL_DIR": str(tmp_path / "none"),
            "QA_RUN_DIR": str(tmp_path / "run"),
        },
    )
    assert result.returncode == 6
    assert "no model to serve" in result.stderr and "HF_MODEL_ID" in result.stderr


def test_the_hub_token_is_never_logged(tmp_path):
    """HF_TOKEN reaches the start-up log line of the settings only as ***."""
    result = run_entrypoint(
        ["serve"],
        {
            "HF_TOKEN": "hf_canary_token_4242",
            "QA_MODEL_DIR": str(tmp_path / "empty"),
            "QA_BAKED_MODEL_DIR": str(tmp_path / "none"),
            "QA_RUN_DIR": str(tmp_path / "run"),
        },
    )
    assert result.returncode == 6
    assert '"hf_token": "***"' in result.stderr, result.stderr
    assert "hf_canary_token_4242" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "variable, value",
    [
        ("SAGEMAKER_BIND_TO_PORT", "eighty"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("QA_PRELOAD", "maybe"),
        ("HF_TASK", "summarization"),
    ],
)
def test_a_malformed_variable_fails_naming_it(variable, value):
    result = run_entrypoint(["serve"], {variable: value}, timeout_s=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


def test_train_fails_with_one_line():
    result = run_entrypoint(["train"], {}, timeout_s=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "serve" in lines[0]


def test_other_commands_are_executed():
    result = run_entrypoint(["echo", "hello from the image"], {}, timeout_s=30)
    assert result.returncode == 0
    assert result.stdout == "hello from the image\n"
