"""Batch Transform as SageMaker runs it, through the SageMaker Python SDK's local mode (a real
client: it starts the image with docker-compose and packs mini-batches as SageMaker does): a
default MultiRecord transform of 3,000 SQuAD-like records (about 3 MB), every record answered,
each answer equal to the real-time endpoint's for the same record. The SDK's telemetry is opted
out and its server bound to a free port on this machine; no AWS call is made."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import requests
from targets import TINY_MODEL, free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

from golden_cases import answers_equal  # noqa: E402

pytestmark = pytest.mark.container

RECORDS = 3000
REAL_TIME_ITEMS = 64  # the real-time endpoint's item limit per request
SDK_CONFIG = "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"


@pytest.fixture
def sdk_environment(tmp_path, monkeypatch):
    if shutil.which("docker-compose") is None:
        pytest.fail(
            "the SDK's local mode needs docker-compose (apt-get install docker-compose; .ci/run does)"
        )
    config = tmp_path / "sagemaker-config.yaml"
    config.write_text(SDK_CONFIG)
    monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 is what the notebook uses
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.chdir(tmp_path)  # docker-compose writes its files beside the working directory
    return tmp_path


def write_records(directory: Path) -> list[dict]:
    from qa.corpus import make_requests

    records = [{"question": r.question, "context": r.context} for r in make_requests(RECORDS)]
    directory.mkdir()
    (directory / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_a_default_multi_record_transform_answers_every_record(
    image: str, containers, sdk_environment
) -> None:
    from sagemaker.local import LocalSession
    from sagemaker.model import Model

    tmp = sdk_environment
    records = write_records(tmp / "in")
    with tarfile.open(tmp / "model.tar.gz", "w:gz") as archive:
        for path in TINY_MODEL.iterdir():
            archive.add(path, arcname=path.name)
    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": free_port(), "container_root": str(tmp)}}
    model = Model(
        image_uri=image,
        model_data=f"file://{tmp / 'model.tar.gz'}",
        role="arn:aws:iam::123456789012:role/local",
        sagemaker_session=session,
    )
    transformer = model.transformer(
        instance_count=1,
        instance_type="local",
        strategy="MultiRecord",
        assemble_with="Line",
        output_path=f"file://{tmp / 'out'}",
        accept="application/jsonlines",
    )
    transformer.transform(
        f"file://{tmp / 'in'}", content_type="application/jsonlines", split_type="Line", wait=True, logs=False
    )
    lines = (tmp / "out" / "records.jsonl.out").read_text().splitlines()
    assert len(lines) == RECORDS, f"{len(lines)} output lines for {RECORDS} records"
    batch_answers = [json.loads(line) for line in lines]

    real_time = containers(image, TINY_MODEL)
    wrong = []
    for begin in range(0, RECORDS, REAL_TIME_ITEMS):
        chunk = records[begin : begin + REAL_TIME_ITEMS]
        resp = requests.post(f"{real_time.base_url}/invocations", json=chunk, timeout=60)
        assert resp.status_code == 200, resp.text
        for offset, (want, got) in enumerate(
            zip(resp.json(), batch_answers[begin : begin + REAL_TIME_ITEMS])
        ):
            if not answers_equal(got, want):
                wrong.append(f"record {begin + offset}: batch {got}, real time {want}")
    assert wrong == []
