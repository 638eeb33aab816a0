"""Build model.tar.gz the way SageMaker extracts it into /opt/ml/model, and upload it to S3.

The archive root is the model directory itself (config.json, model.safetensors, tokenizer
files ...) with an optional code/ folder (inference.py, requirements.txt) beside them, and
optionally the model's graphs in graphs/, made by the serving image (`export_graphs`) with its
precision report, so that no instance makes them at start-up.
Entries are sorted with fixed owners and times, so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError

ARCHIVE_NAME = "model.tar.gz"
GRAPH_DIR = "graphs"  # <model dir>/graphs: where the container looks for graphs before making them
REPORT_FILE = "precision-report.json"  # beside them: logged at start-up for a reduced precision


class PackageError(ValueError):
    """The inputs cannot make a valid model archive; the message (one line) says which and why.
    `detail`: more lines to show before it, e.g. the end of a failed command's output."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


MODEL_DIR_FIX = "pass the directory save_pretrained wrote (config.json, weights, tokenizer files)"


def _check_dir(path: Path, what: str, fix: str) -> None:
    if path.is_dir():
        return
    state = "is not a directory" if path.exists() else "does not exist"
    raise PackageError(f"{what} {path} {state}; {fix}")


def _files(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            raise PackageError(f"{path} is a symlink out of {root}: copy the file in instead")
        if path.is_file():
            out.append(path)
    return out


def plan_archive(
    model_dir: Path, code_dir: Path | None = None, extra: Mapping[str, Path] | None = None
) -> list[tuple[Path, str]]:
    """(source file, name in archive) pairs, sorted by name. code_dir replaces model_dir/code;
    `extra` (name in archive -> file) adds or replaces entries."""
    model_dir = Path(model_dir)
    _check_dir(model_dir, "model directory", MODEL_DIR_FIX)
    entries: dict[str, Path] = {}
    for path in _files(model_dir):
        rel = path.relative_to(model_dir).as_posix()
        if code_dir is not None and rel.split("/", 1)[0] == "code":
            continue
        entries[rel] = path
    if code_dir is not None:
        code_dir = Path(code_dir)
        _check_dir(code_dir, "code directory", "pass the directory holding inference.py to --code")
        for path in _files(code_dir):
            rel = path.relative_to(code_dir).as_posix()
            if "__pycache__" in rel.split("/"):
                continue
            entries[f"code/{rel}"] = path
    entries.update(extra or {})
    if ARCHIVE_NAME in entries:
        raise PackageError(f"{model_dir} already holds {ARCHIVE_NAME}: point at the unpacked model")
    names = set(entries)
    if "config.json" not in names and "code/inference.py" not in names:
        raise PackageError(
            f"{model_dir} has no config.json (a save_pretrained directory) and no "
            "code/inference.py (a custom handler): nothing the container could load"
        )
    return sorted(((src, name) for name, src in entries.items()), key=lambda item: item[1])


def build_archive(
    model_dir: Path, output: Path, code_dir: Path | None = None, extra: Mapping[str, Path] | None = None
) -> list[str]:
    """Write the archive to `output`; returns the member names in order."""
    plan = plan_archive(model_dir, code_dir, extra)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for src, name in plan:
                info = tarfile.TarInfo(name)
                info.size = src.stat().st_size
                info.mode = 0o644
                info.mtime = 0
                with open(src, "rb") as handle:
                    tar.addfile(info, handle)
    return [name for _, name in plan]


def export_graphs(
    image: str,
    model_dir: Path,
    out_dir: Path,
    precisions: Sequence[str],
    samples: Path | None = None,
    report: bool = True,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Path]:
    """Make the model's graphs with the serving image's own code, into `out_dir` (int8 calibrated
    on `samples`, JSON Lines of requests, else the built-in corpus), and with `report` the
    precision report beside them (its table goes to `log`); returns {name in archive: file}. A graph's name carries a key
    over the weights and the versions of the libraries that made it, so only the image that will
    serve the model can make graphs it will use: pass that image."""
    _check_dir(Path(model_dir), "model directory", MODEL_DIR_FIX)
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    if samples is not None and not Path(samples).is_file():
        raise PackageError(
            f"samples file {samples} does not exist; pass a JSON Lines file of requests to --samples"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    mounts = ["-v", f"{model_dir}:/opt/ml/model:ro", "-v", f"{out_dir}:/out"]
    sample_args = []
    if samples is not None:
        mounts += ["-v", f"{Path(samples).resolve()}:/samples.jsonl:ro"]
        sample_args = ["/samples.jsonl"]
    docker = [
        "docker", "run", "--rm", "--network", "none",
        # As the caller, so the files are the caller's; HOME for libraries' caches.
        "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp", "-e", "QA_GRAPH_CACHE_DIR=/out",
        *mounts, image,
    ]  # fmt: skip
    export = ["python", "-m", "qa.graphs", "export", "/opt/ml/model", "/out", "--precision", *precisions]
    if sample_args:
        export += ["--samples", *sample_args]
    _run_in_image([*docker, *export], "making the graphs", image)
    graphs = sorted(p for p in out_dir.glob("qa-*") if p.suffix in (".onnx", ".xml", ".bin"))
    if not graphs:
        raise PackageError(f"{image} made no graphs in {out_dir}")
    if report and set(precisions) - {"fp32"}:
        # The report finds the graphs just made through QA_GRAPH_CACHE_DIR=/out.
        table = _run_in_image(
            [*docker, "precision-report", *sample_args, "--json", f"/out/{REPORT_FILE}"],
            "the precision report",
            image,
        )
        log(table.strip())
        graphs.append(out_dir / REPORT_FILE)
    return {f"{GRAPH_DIR}/{path.name}": path for path in graphs}


def _run_in_image(command: list[str], what: str, image: str) -> str:
    """Runs a `docker run` command line; its standard output, or PackageError naming its last
    line (the last lines in `detail`)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise PackageError(f"{what} needs Docker (docker not found on PATH); install Docker") from exc
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).strip().splitlines() if line.strip()]
        last = f"{lines[-1].strip()} (the end of its output is above)" if lines else "no output"
        raise PackageError(
            f"{what} with {image} failed (exit {result.returncode}): {last}", detail="\n".join(lines[-15:])
        )
    return result.stdout


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key). A key ending in '/' gets model.tar.gz appended."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise PackageError(f"{uri!r} is not an S3 URI (s3://bucket/prefix/{ARCHIVE_NAME})")
    key = parsed.path.lstrip("/")
    if not key or key.endswith("/"):
        key += ARCHIVE_NAME
    return parsed.netloc, key


def check_bucket(s3_client, uri: str, archive: Path) -> None:
    """Before building: fail at once when the upload's bucket does not exist, as the upload would
    (boto3's S3UploadFailedError), not after a long build. Only a 404 counts: without
    s3:ListBucket HeadBucket answers 403, and the upload itself may still be allowed."""
    bucket, key = parse_s3_uri(uri)
    try:
        s3_client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
            failed = S3UploadFailedError(f"Failed to upload {archive} to {bucket}/{key}: {exc}")
            failed.upload = (archive, bucket, key)  # type: ignore[attr-defined]
            raise failed from exc


def upload(s3_client, archive: Path, uri: str) -> str:
    """Upload the archive (multipart for big files); returns the s3:// URI of the object."""
    bucket, key = parse_s3_uri(uri)
    try:
        s3_client.upload_file(str(archive), bucket, key)
    except S3UploadFailedError as exc:
        exc.upload = (archive, bucket, key)  # type: ignore[attr-defined]  # for deploy.errors
        raise
    return f"s3://{bucket}/{key}"
