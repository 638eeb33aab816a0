"""model.tar.gz layout: what SageMaker extracts into /opt/ml/model, byte-for-byte reproducible."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from deploy import package


def read_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise KeyError(name)
        return member.read()


@pytest.fixture
def model_dir(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "distilbert"}')
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    (model / "tokenizer.json").write_text("{}")
    (model / "code").mkdir()
    (model / "code" / "inference.py").write_text("# model-dir handler\n")
    return model


def test_files_at_the_archive_root(model_dir, tmp_path):
    out = tmp_path / "model.tar.gz"
    names = package.build_archive(model_dir, out)
    assert names == ["code/inference.py", "config.json", "model.safetensors", "tokenizer.json"]
    with tarfile.open(out, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == names
    assert all(m.isfile() and m.mode == 0o644 and m.uid == 0 and m.mtime == 0 for m in members)
    assert read_member(out, "model.safetensors") == b"\0" * 64


def test_code_dir_replaces_model_code(model_dir, tmp_path):
    code = tmp_path / "my_code"
    (code / "__pycache__").mkdir(parents=True)
    (code / "inference.py").write_text("# custom handler\n")
    (code / "requirements.txt").write_text("\n")
    (code / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"x")
    out = tmp_path / "model.tar.gz"
    names = package.build_archive(model_dir, out, code_dir=code)
    assert names == [
        "code/inference.py",
        "code/requirements.txt",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert read_member(out, "code/inference.py") == b"# custom handler\n"


def test_same_inputs_same_bytes(model_dir, tmp_path):
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    package.build_archive(model_dir, first)
    (model_dir / "config.json").touch()  # a new mtime must not change the archive
    package.build_archive(model_dir, second)
    assert first.read_bytes() == second.read_bytes()


def test_custom_handler_without_config_is_allowed(tmp_path):
    model = tmp_path / "m"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text("")
    assert package.build_archive(model, tmp_path / "o.tar.gz") == ["code/inference.py"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "no config.json"),
        (lambda d: (d / "model.tar.gz").write_bytes(b""), "already holds model.tar.gz"),
    ],
)
def test_refuses_what_the_container_could_not_load(tmp_path, setup, message):
    model = tmp_path / "m"
    model.mkdir()
    (model / "notes.txt").write_text("")
    setup(model)
    if message != "no config.json":
        (model / "config.json").write_text("{}")
    with pytest.raises(package.PackageError, match=message):
        package.build_archive(model, tmp_path / "o.tar.gz")


def test_refuses_missing_dirs_and_escaping_symlinks(model_dir, tmp_path):
    with pytest.raises(package.PackageError, match="does not exist"):
        package.plan_archive(tmp_path / "nowhere")
    with pytest.raises(package.PackageError, match="code directory"):
        package.plan_archive(model_dir, tmp_path / "no-code")
    (tmp_path / "secret").write_text("x")
    (model_dir / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(package.PackageError, match="symlink out of"):
        package.plan_archive(model_dir)


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://bucket/qa/model.tar.gz", ("bucket", "qa/model.tar.gz")),
        ("s3://bucket/qa/", ("bucket", "qa/model.tar.gz")),
        ("s3://bucket", ("bucket", "model.tar.gz")),
    ],
)
def test_s3_uris(uri, expected):
    assert package.parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri", ["bucket/key", "https://bucket.s3.amazonaws.com/k", "s3:///key"])
def test_bad_s3_uris(uri):
    with pytest.raises(package.PackageError, match="not an S3 URI"):
        package.parse_s3_uri(uri)


def test_made_graphs_go_to_graphs_and_replace_the_model_dirs_own(model_dir, tmp_path):
    (model_dir / "graphs").mkdir()
    (model_dir / "graphs" / "qa-fp32-0123.onnx").write_bytes(b"old")
    graph = tmp_path / "qa-fp32-0123.onnx"
    graph.write_bytes(b"new")
    out = tmp_path / "model.tar.gz"
    names = package.build_archive(model_dir, out, extra={"graphs/qa-fp32-0123.onnx": graph})
    assert "graphs/qa-fp32-0123.onnx" in names and names == sorted(names)
    assert read_member(out, "graphs/qa-fp32-0123.onnx") == b"new"


def test_export_runs_the_images_own_exporter_and_reports_its_failure(model_dir, tmp_path, monkeypatch):
    calls = []

    def fake_docker(command, **kwargs):
        calls.append(command)
        out = Path(command[command.index("-v", command.index("-v") + 1) + 1].split(":")[0])
        (out / "qa-fp32-abcd.onnx").write_bytes(b"graph")
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

    monkeypatch.setattr(package.subprocess, "run", fake_docker)
    graphs = package.export_graphs("qa:1", model_dir, tmp_path / "graphs", ["fp32"])
    assert graphs == {"graphs/qa-fp32-abcd.onnx": tmp_path / "graphs" / "qa-fp32-abcd.onnx"}
    (command,) = calls  # fp32 alone: no precision report
    assert command[:2] == ["docker", "run"] and "qa:1" in command
    assert command[command.index("qa:1") + 1 :] == [
        "python", "-m", "qa.graphs", "export", "/opt/ml/model", "/out", "--precision", "fp32"
    ]  # fmt: skip
    assert f"{model_dir.resolve()}:/opt/ml/model:ro" in command

    monkeypatch.setattr(
        package.subprocess,
        "run",
        lambda command, **kw: subprocess.CompletedProcess(
            command, 1, stdout="", stderr="Traceback\nOSError: no config\n"
        ),
    )
    with pytest.raises(package.PackageError, match=r"(?s)failed \(exit 1\).*OSError: no config"):
        package.export_graphs("qa:1", model_dir, tmp_path / "other", ["fp32"])
