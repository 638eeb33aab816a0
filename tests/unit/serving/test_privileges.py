"""Who the request-handling processes run as (serving/privileges.py)."""

from __future__ import annotations

import logging
import os

import pytest

from serving import nginx, privileges
from serving.privileges import Identity, first_unreadable, hand_over, worker_identity
from serving.settings import Settings

NOBODY = Identity("nobody", 65534, 65534)


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileges.os, "getgrouplist", lambda name, gid: [gid])


def test_a_world_readable_model_is_readable(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights").write_bytes(b"x")
    for path in (tmp_path, tmp_path / "sub"):
        path.chmod(0o755)
    (tmp_path / "sub" / "weights").chmod(0o644)
    assert first_unreadable(tmp_path, NOBODY) is None


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o200])
def test_an_owner_only_file_is_found(tmp_path, mode):
    tmp_path.chmod(0o755)
    secret = tmp_path / "model.safetensors"
    secret.write_bytes(b"x")
    secret.chmod(mode)
    assert first_unreadable(tmp_path, NOBODY) == secret


def test_a_directory_others_cannot_enter_is_found(tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "code").mkdir(mode=0o700)
    assert first_unreadable(tmp_path, NOBODY) == tmp_path / "code"


def test_as_root_with_a_readable_model_the_workers_drop_to_the_user(tmp_path, as_root):
    tmp_path.chmod(0o755)
    assert worker_identity("nobody", tmp_path) == Identity("nobody", 65534, 65534)


def test_an_unreadable_model_keeps_root_and_says_which_file(tmp_path, as_root, caplog):
    tmp_path.chmod(0o755)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "config.json").chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert worker_identity("nobody", tmp_path) is None
    assert "config.json" in caplog.text and "chmod -R a+rX" in caplog.text


def test_a_missing_user_or_root_or_not_being_root_keeps_the_current_user(
    tmp_path, as_root, monkeypatch, caplog
):
    with caplog.at_level(logging.WARNING):
        assert worker_identity("no-such-user-here", tmp_path) is None
    assert "no-such-user-here" in caplog.text
    assert worker_identity("root", tmp_path) is None
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 1000)
    assert worker_identity("nobody", tmp_path) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_the_directories_workers_write_are_handed_over(tmp_path):
    dirs = [tmp_path / "ready", tmp_path / "graphs" / "cache"]
    hand_over(dirs, NOBODY)
    assert all(d.is_dir() and d.stat().st_uid == NOBODY.uid for d in dirs)


def test_nginx_workers_run_as_the_chosen_user(tmp_path, monkeypatch):
    monkeypatch.setattr(nginx.os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 0)
    settings = Settings(run_dir=tmp_path)
    assert nginx.render(settings, worker_user="nobody").splitlines()[2].startswith("user nobody ")
    assert "user root root;" in nginx.render(settings, worker_user="root")
    monkeypatch.setattr(nginx.os, "geteuid", lambda: 1000)
    assert "\nuser " not in nginx.render(settings, worker_user="nobody")


def test_the_entrypoint_hands_its_decision_down_as_a_resolved_setting(tmp_path, monkeypatch):
    import entrypoint

    monkeypatch.setattr(entrypoint, "worker_identity", lambda user, root: NOBODY)
    monkeypatch.setattr(entrypoint, "hand_over", lambda paths, identity: None)
    owners = []
    monkeypatch.setattr(entrypoint.os, "chown", lambda path, uid, gid: owners.append((path, uid)))
    requested = Settings(run_dir=tmp_path, model_dir=tmp_path, worker_user="qa")
    chosen = entrypoint._choose_worker_user(requested, tmp_path)
    assert (chosen.worker_user, chosen.workers_run_as) == ("qa", "nobody")  # requested, decided
    assert owners == [(chosen.resolved_file, NOBODY.uid)]  # the workers read it
    assert Settings.load(entrypoint._gunicorn_env(chosen)) == chosen
