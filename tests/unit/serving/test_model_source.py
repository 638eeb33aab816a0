"""serving/model_source.py: which model is served, and the Hub download (stubbed)."""

from __future__ import annotations

import pytest

from serving import model_source
from serving.model_source import COMPLETE_MARKER, ModelSourceError, holds_model, resolve_model
from serving.settings import Settings


def make_model(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


def test_holds_model_ignores_code_and_hidden_files(tmp_path):
    assert not holds_model(tmp_path / "missing")
    (tmp_path / "code").mkdir()
    (tmp_path / ".cache").mkdir()
    assert not holds_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert holds_model(tmp_path)


def test_the_mounted_model_dir_wins(tmp_path):
    s = Settings(
        model_dir=make_model(tmp_path / "ml"),
        baked_model_dir=make_model(tmp_path / "baked"),
        hf_model_id="org/m",
    )
    assert resolve_model(s) == tmp_path / "ml"


def test_the_baked_model_is_the_fallback(tmp_path):
    s = Settings(model_dir=tmp_path / "empty", baked_model_dir=make_model(tmp_path / "baked"))
    assert resolve_model(s) == tmp_path / "baked"


def test_no_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match="no model to serve.*HF_MODEL_ID"):
        resolve_model(Settings(model_dir=tmp_path / "a", baked_model_dir=tmp_path / "b"))


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def snapshot_download(repo_id, *, revision, local_dir, token, tqdm_class):
        calls.append((repo_id, revision, str(local_dir), token))
        with tqdm_class(total=2, desc="Fetching 2 files") as progress:
            (local_dir / "config.json").write_text("{}")
            progress.update(2)
        return str(local_dir)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    return calls


def test_hf_model_id_is_downloaded_once_into_the_run_dir(tmp_path, fake_hub, caplog):
    s = Settings(
        model_dir=tmp_path / "empty",
        run_dir=tmp_path / "run",
        hf_model_id="org/my-model",
        hf_model_revision="v1",
        hf_token="t",
    )
    with caplog.at_level("INFO"):
        path = resolve_model(s)
    assert path == tmp_path / "run" / "hub" / "org--my-model" / "v1"
    assert (path / COMPLETE_MARKER).is_file()
    assert fake_hub == [("org/my-model", "v1", str(path), "t")]
    assert "downloading HF_MODEL_ID=org/my-model" in caplog.text
    assert "downloading org/my-model: Fetching 2 files" in caplog.text  # progress as log lines
    # Workers resolve again without downloading.
    assert resolve_model(s, download=False) == path
    assert len(fake_hub) == 1


def test_code_only_model_dir_with_hf_model_id_downloads(tmp_path, fake_hub):
    (tmp_path / "ml" / "code").mkdir(parents=True)
    s = Settings(model_dir=tmp_path / "ml", run_dir=tmp_path / "run", hf_model_id="org/m")
    assert resolve_model(s).name == "main"


def test_workers_never_download(tmp_path, fake_hub):
    s = Settings(model_dir=tmp_path / "empty", run_dir=tmp_path / "run", hf_model_id="org/m")
    with pytest.raises(ModelSourceError, match="not complete"):
        resolve_model(s, download=False)
    assert fake_hub == []


def test_a_failed_download_says_what_to_check(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fail)
    s = Settings(model_dir=tmp_path / "empty", run_dir=tmp_path / "run", hf_model_id="org/m")
    with pytest.raises(
        ModelSourceError, match="could not download HF_MODEL_ID=org/m.*network unreachable.*HF_TOKEN"
    ):
        model_source.resolve_model(s)
