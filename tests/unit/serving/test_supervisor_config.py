"""The process layer's configuration: nginx's rendered config and gunicorn's config module,
both derived from the one Settings object."""

from __future__ import annotations

import dataclasses
import importlib.util
import pwd
import subprocess
import sys
import types
from pathlib import Path

import pytest

from serving import nginx, privileges
from serving.settings import RESOLVED_SETTINGS, Settings, waiting_requests

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings(tmp_path):
    return Settings(
        run_dir=tmp_path / "run", bind_host="127.0.0.1", port=18999, max_payload_mb=4, request_timeout_s=30
    )


def test_nginx_config_is_derived_from_the_settings(settings):
    conf = nginx.render(settings)
    assert "{{" not in conf
    assert "listen 127.0.0.1:18999" in conf
    assert "client_max_body_size 4m;" in conf
    assert "proxy_read_timeout 35s;" in conf  # the app's 30 s budget answers first
    assert f"server unix:{settings.run_dir}/work.sock;" in conf
    assert f"server unix:{settings.run_dir}/control.sock;" in conf
    assert "daemon off;" in conf and "error_log stderr" in conf
    assert "access_log /dev/stdout" in conf and "/ping 0;" in conf
    for temp in (
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    ):
        assert f"{temp} {settings.run_dir}/nginx/" in conf
    assert "request body larger than 4 MB" in conf


def test_nginx_admits_the_served_and_waiting_requests_and_answers_the_next_503(settings):
    settings = dataclasses.replace(settings, workers=2, requests_per_worker=3, max_waiting_requests=7)
    conf = nginx.render(settings)
    invocations = conf[conf.index("location ~ ^/invocations/?$ {") :]
    invocations = invocations[: invocations.index("}")]
    assert "limit_conn invocations 13;" in invocations  # 2 x 3 served, 7 waiting
    assert "limit_conn_status 503;" in invocations and "proxy_pass http://gunicorn_work;" in invocations
    assert "error_page 503 /__error/overloaded;" in invocations
    assert "error_page 413 /__error/413;" in invocations  # the server's other pages still apply
    page = next(line for line in conf.splitlines() if "location = /__error/overloaded" in line)
    assert "Retry-After 1" in page and "return 503" in page and "7 requests are already waiting" in page
    assert 'proxy_set_header X-Request-Start "t=$msec";' in conf


@pytest.mark.parametrize(
    "env, cpu_class, expected",
    [
        ({}, "avx512", 521),  # fp32: 60 s x 2 CPUs / 0.230 CPU-s per request
        ({"QA_PRECISION": "int8"}, "avx512", 1935),
        ({"QA_PRECISION": "int8"}, "avx2", 645),
        ({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "6"}, "avx512", 52),
        ({"QA_MAX_WAITING_REQUESTS": "0"}, "avx512", 0),
        ({"QA_MAX_WAITING_REQUESTS": "4096"}, "avx512", 4096 - 16),  # the kernel's listen queue
        ({"SAGEMAKER_BATCH": "true", "QA_PRECISION": "int8"}, "avx512", 4096 - 16),
    ],
)
def test_waiting_requests_are_what_the_instance_answers_within_the_budget(env, cpu_class, expected):
    assert waiting_requests(Settings.from_env(env, cpu_limit=2), cpu_class) == expected


def test_every_nginx_error_page_is_json(settings):
    conf = nginx.render(settings)
    pages = [line for line in conf.splitlines() if "location = /__error/" in line and "return" in line]
    for line in pages:
        body = line.split("'")[1]
        assert body.startswith('{"code": ') and '"type": ' in body and '"message": ' in body


@pytest.mark.skipif(not Path(nginx.NGINX_BINARY).exists(), reason="nginx is not installed")
def test_nginx_accepts_the_rendered_config(settings):
    conf = nginx.write_config(settings)
    result = subprocess.run(
        [nginx.NGINX_BINARY, "-t", "-e", "stderr", "-p", str(settings.run_dir / "nginx"), "-c", str(conf)],
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert nginx.command(settings)[:3] == [nginx.NGINX_BINARY, "-e", "stderr"]


def load_gunicorn_conf(monkeypatch, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(
        "gunicorn_conf_under_test", ROOT / "serving" / "gunicorn_conf.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_config_is_derived_from_the_settings(monkeypatch, tmp_path):
    conf = load_gunicorn_conf(
        monkeypatch,
        {
            "QA_RUN_DIR": str(tmp_path),
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "QA_THREADS_PER_WORKER": "5",
            "QA_PRELOAD": "true",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "WARNING",
        },
    )
    assert conf.worker_class == "serving.gunicorn_worker.AdmittingWorker"
    assert conf.workers == 3 and conf.threads == 7  # 5 for inference, 2 for /ping and the rest
    assert conf.bind == [f"unix:{tmp_path}/work.sock", f"unix:{tmp_path}/control.sock"]
    assert conf.backlog >= 3 * 5  # room for every request nginx admits
    assert conf.preload_app is True and conf.loglevel == "warning"
    assert conf.wsgi_app == "serving.app:create_app_from_env()"
    # Stops fit SageMaker's 30 s between SIGTERM and SIGKILL.
    assert conf.graceful_timeout <= 25 and conf.control_socket_disable is True


def test_gunicorn_config_assigns_only_gunicorn_settings(monkeypatch, tmp_path):
    gunicorn_config = pytest.importorskip("gunicorn.config")
    conf = load_gunicorn_conf(monkeypatch, {"QA_RUN_DIR": str(tmp_path)})
    known = {setting.name for setting in gunicorn_config.KNOWN_SETTINGS}
    imported = {
        "work_socket_path",
        "control_socket_path",
        "Settings",
        "admitted_requests",
        "cpu_class",
        "cpu_flags",
        "CONTROL_THREADS",
        "lookup",
        "raw_error_response",
    }
    assigned = {
        name
        for name, value in vars(conf).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name not in imported
    }
    assert assigned <= known, assigned - known


def test_gunicorn_accepts_the_config(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "-c", "serving/gunicorn_conf.py"],
        cwd=ROOT,
        env={"QA_RUN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif("nobody" not in {entry.pw_name for entry in pwd.getpwall()}, reason="no user nobody")
def test_gunicorn_takes_the_entrypoints_resolved_settings_and_its_decided_user(monkeypatch, tmp_path):
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 0)
    asked = load_gunicorn_conf(monkeypatch, {"QA_RUN_DIR": str(tmp_path), "QA_WORKER_USER": "nobody"})
    assert not hasattr(asked, "user")  # requested, not decided: only the entrypoint decides
    resolved = Settings.from_env({"QA_RUN_DIR": str(tmp_path)}, cpu_limit=2.0)
    resolved = dataclasses.replace(resolved, workers=3, workers_run_as="nobody")
    conf = load_gunicorn_conf(
        monkeypatch, {RESOLVED_SETTINGS: str(resolved.save()), "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    )
    assert conf.workers == 3 and conf.user == pwd.getpwnam("nobody").pw_uid
