"""`batch` against a real moto server: what CreateTransformJob carries (nothing the container
advertises unless given), the invocation timeout on the job and on the model it creates, and
the record counts read back from the .out objects.

moto's transform job is Completed at once and writes no output, so the count tests put the
.out objects in moto's S3 themselves: right after CreateTransformJob (a botocore after-call
hook on the client the CLI uses, in process), or before calling `count_records` directly."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from deploy_testkit import IMAGE, ROLE, run_deploy

from deploy import batch as batch_module
from deploy import cli

IN, OUT = "s3://data/requests/", "s3://data/answers/"
SIZING = ("MaxPayloadInMB", "MaxConcurrentTransforms", "BatchStrategy", "ModelClientConfig")
ANSWER = {"score": 0.9, "start": 0, "end": 3, "answer": "Ann"}
FAILED = {"error": {"type": "BadRequest", "message": "line 2: 'question' is missing"}}


def deploy_ok(aws, *args: str) -> tuple[dict, str]:
    proc = run_deploy(list(args), aws.env)
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout), proc.stderr


def existing_model(aws, name: str = "qa-model", env: dict | None = None) -> str:
    aws.client("sagemaker").create_model(
        ModelName=name,
        PrimaryContainer={
            "Image": IMAGE,
            "ModelDataUrl": "s3://models/qa/model.tar.gz",
            "Environment": env or {},
        },
        ExecutionRoleArn=ROLE,
    )
    return name


def described(aws, job: str) -> dict:
    return aws.client("sagemaker").describe_transform_job(TransformJobName=job)


def lines(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_default_request_leaves_sizing_to_the_container(aws):
    model = existing_model(aws)
    job, _ = deploy_ok(aws, "batch", "--model", model, "--input", IN, "--output", OUT, "--job-name", "qa-1")
    got = described(aws, "qa-1")
    assert [key for key in SIZING if key in got] == []
    assert got["TransformInput"]["SplitType"] == "Line" and got["TransformOutput"]["AssembleWith"] == "Line"
    assert job["status"] == "InProgress" and "records" not in job


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-payload-mb", "4"], {"MaxPayloadInMB": 4, "BatchStrategy": "MultiRecord"}),
        (["--max-concurrent", "2"], {"MaxConcurrentTransforms": 2, "BatchStrategy": "MultiRecord"}),
        (
            ["--max-payload-mb", "50", "--max-concurrent", "2", "--batch-strategy", "SingleRecord"],
            {"MaxPayloadInMB": 50, "MaxConcurrentTransforms": 2, "BatchStrategy": "SingleRecord"},
        ),
        (["--batch-strategy", "MultiRecord"], {"BatchStrategy": "MultiRecord"}),
    ],
)
def test_sizing_is_sent_when_given(aws, args, expected):
    model = existing_model(aws)
    deploy_ok(aws, "batch", "--model", model, "--input", IN, "--output", OUT, "--job-name", "qa-1", *args)
    got = described(aws, "qa-1")
    assert {key: got[key] for key in SIZING if key in got} == expected


def test_invocation_timeout_on_the_job_and_the_model_it_creates(aws):
    job, stderr = deploy_ok(
        aws,
        "batch",
        *("--image", IMAGE, "--role", ROLE, "--model-data", "s3://models/qa/model.tar.gz"),
        *("--env", "QA_PRECISION=int8", "--input", IN, "--output", OUT),
        *("--invocation-timeout", "1200", "--invocation-retries", "0"),
    )
    got = described(aws, job["transform_job"])
    assert got["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 1200, "InvocationsMaxRetries": 0}
    assert "MaxPayloadInMB" not in got and "MaxConcurrentTransforms" not in got
    model = aws.client("sagemaker").describe_model(ModelName=job["model"])
    assert model["PrimaryContainer"]["Environment"] == {
        "QA_PRECISION": "int8",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1200",
    }
    assert "note:" not in stderr


def test_invocation_timeout_alone_keeps_sagemakers_retries(aws):
    model = existing_model(aws, env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "900"})
    _, stderr = deploy_ok(
        aws,
        "batch",
        "--model",
        model,
        "--input",
        IN,
        "--output",
        OUT,
        "--job-name",
        "qa-1",
        "--invocation-timeout",
        "900",
    )
    assert described(aws, "qa-1")["ModelClientConfig"] == {
        "InvocationsTimeoutInSeconds": 900,
        "InvocationsMaxRetries": 3,
    }
    assert "note:" not in stderr


def test_existing_model_with_another_budget_gets_a_note(aws):
    model = existing_model(aws)
    _, stderr = deploy_ok(
        aws, "batch", "--model", model, "--input", IN, "--output", OUT, "--invocation-timeout", "300"
    )
    note = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert note == [
        "note: model qa-model has SAGEMAKER_MODEL_SERVER_TIMEOUT=600 s, not 300: it sizes its mini-batches "
        "for 600 s; to match, let batch create the model (--image/--role instead of --model) or pass "
        "--invocation-timeout 600"
    ]
    assert aws.client("sagemaker").describe_model(ModelName=model)["PrimaryContainer"]["Environment"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-payload-mb", "0"], "--max-payload-mb must be between 1 and 100"),
        (["--max-payload-mb", "101"], "--max-payload-mb must be between 1 and 100"),
        (["--max-concurrent", "0"], "--max-concurrent must be at least 1"),
        (["--max-payload-mb", "30", "--max-concurrent", "4"], "--max-concurrent 4 x --max-payload-mb 30"),
        (["--invocation-timeout", "0"], "--invocation-timeout must be between 1 and 3600 seconds"),
        (["--invocation-timeout", "3601"], "--invocation-timeout must be between 1 and 3600 seconds"),
        (["--invocation-retries", "4"], "--invocation-retries must be between 0 and 3"),
        (
            ["--invocation-timeout", "900", "--env", "SAGEMAKER_MODEL_SERVER_TIMEOUT=600"],
            "--env SAGEMAKER_MODEL_SERVER_TIMEOUT=600 disagrees with --invocation-timeout 900",
        ),
    ],
)
def test_bad_options_fail_before_any_resource(aws, args, message):
    proc = run_deploy(
        [
            "batch",
            "--image",
            IMAGE,
            "--role",
            ROLE,
            "--hf-model-id",
            "x/y",
            "--input",
            IN,
            "--output",
            OUT,
            *args,
        ],
        aws.env,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1
    sm = aws.client("sagemaker")
    assert sm.list_models()["Models"] == [] and sm.list_transform_jobs()["TransformJobSummaries"] == []


def run_in_process(aws, capsys, outputs: dict[str, bytes], *args: str) -> tuple[int, dict, str]:
    """`batch --wait` through cli.main; `outputs` (key -> body) land in the bucket "data" right
    after CreateTransformJob, as the finished job's .out objects would."""
    s3 = aws.client("s3")
    sm = aws.client("sagemaker")

    def write_outputs(**_):
        for key, body in outputs.items():
            s3.put_object(Bucket="data", Key=key, Body=body)

    sm.meta.events.register("after-call.sagemaker.CreateTransformJob", write_outputs)
    made = {"sagemaker": sm, "s3": s3}
    code = cli.main(["batch", "--wait", "--poll", "0.1", *args], clients=made.__getitem__, environ={})
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else {}, err


def test_wait_counts_answers_and_error_lines_over_several_outputs(aws, capsys):
    aws.client("s3").create_bucket(Bucket="data")
    aws.client("s3").put_object(Bucket="data", Key="requests/a.jsonl", Body=b"{}\n")
    outputs = {
        "answers/a.jsonl.out": lines(ANSWER, FAILED, [ANSWER, ANSWER], FAILED),
        "answers/sub/b.jsonl.out": lines(ANSWER, ANSWER, ANSWER),
        "answers/c.jsonl.out": lines(*[ANSWER] * 998, FAILED),
        "answers/_manifest.json": lines(FAILED),  # not a .out: not counted
    }
    model = existing_model(aws)
    code, result, err = run_in_process(
        aws, capsys, outputs, "--model", model, "--input", IN, "--output", OUT, "--job-name", "qa-1"
    )
    assert code == 0, err
    assert result["status"] == "Completed"
    assert (result["records"], result["failed_records"]) == (1006, 3)
    assert sorted(result["failed_outputs"]) == [
        "s3://data/answers/a.jsonl.out",
        "s3://data/answers/c.jsonl.out",
    ]
    summary = err.splitlines()[-1]
    assert summary.startswith("transform job qa-1: Completed; 1,006 records: 1,003 answered, 3 failed (")
    assert "list them with: aws s3 cp s3://data/answers/" in summary
    assert summary.endswith(
        " - | jq -c 'select(.error)', and the same for the 1 other .out file in failed_outputs)"
    )


def test_wait_with_no_failures_and_no_trailing_slash(aws, capsys):
    aws.client("s3").create_bucket(Bucket="data")
    outputs = {"answers/a.jsonl.out": lines(ANSWER, ANSWER), "answers-old/x.jsonl.out": lines(FAILED)}
    code, result, err = run_in_process(
        aws, capsys, outputs, "--model", existing_model(aws), "--input", IN, "--output", "s3://data/answers"
    )
    assert code == 0, err
    assert (result["records"], result["failed_records"]) == (2, 0) and "failed_outputs" not in result
    assert err.splitlines()[-1].endswith(
        "Completed; 2 records: 2 answered, 0 failed (1 .out files under s3://data/answers)"
    )


def test_wait_with_no_output_says_so(aws, capsys):
    aws.client("s3").create_bucket(Bucket="data")
    code, result, err = run_in_process(
        aws, capsys, {}, "--model", existing_model(aws), "--input", IN, "--output", OUT, "--job-name", "qa-1"
    )
    assert code == 0, err
    assert (result["records"], result["failed_records"]) == (0, 0)
    assert err.splitlines()[-1] == (
        "transform job qa-1: Completed; 0 records: 0 answered, 0 failed (no .out files under "
        "s3://data/answers/: check that --input holds non-empty .jsonl files)"
    )


def test_wait_with_unreadable_output_still_reports_the_job(aws, capsys):
    code, result, err = run_in_process(
        aws, capsys, {}, "--model", existing_model(aws), "--input", IN, "--output", "s3://nobucket/out/"
    )
    assert code == 0, err
    assert result["status"] == "Completed" and "records" not in result
    last = err.splitlines()[-1]
    assert "Completed; records not counted: ListObjectsV2 failed (NoSuchBucket)" in last
    assert last.endswith("create it (aws s3 mb s3://nobucket) or use an S3 URI in an existing bucket")


def test_count_records_directly(aws, monkeypatch):
    monkeypatch.setattr(batch_module, "READ_CHUNK", 7)  # lines cross chunk boundaries
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="out")
    tricky = [
        {"answer": 'he said "error"', "score": 0.5},  # "error" inside an answer is no error
        {"error": None},
        [{"error": "in a list"}],
    ]
    bodies = {
        "job/empty.jsonl.out": b"",
        "job/a.jsonl.out": lines(ANSWER, FAILED) + b"\n",  # a blank line is no record
        "job/b.jsonl.out": lines(*tricky) + json.dumps(FAILED).encode(),  # no final newline
        "job/a.jsonl": lines(FAILED),
    }
    for key, body in bodies.items():
        s3.put_object(Bucket="out", Key=key, Body=body)
    counts = batch_module.count_records(s3, "s3://out/job/")
    assert counts == {
        "records": 6,
        "failed_records": 2,
        "outputs": 3,
        "stale_outputs": 0,
        "failed_outputs": ["s3://out/job/a.jsonl.out", "s3://out/job/b.jsonl.out"],
    }
    assert batch_module.count_records(s3, "s3://out/elsewhere/")["outputs"] == 0
    assert batch_module.count_records(s3, "s3://out")["records"] == 6  # the bucket root
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    stale = batch_module.count_records(s3, "s3://out/job", since=later)
    assert (stale["records"], stale["outputs"], stale["stale_outputs"]) == (0, 0, 3)
