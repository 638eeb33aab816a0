"""Every failure of `python -m deploy` is one `error:` line on stderr (what failed, why, how to
fix it) with a non-zero exit code and no traceback, unless --debug.

The missing bucket, the malformed role and the missing files run the real CLI against the moto
server (as test_cli_moto.py does); a role SageMaker cannot assume is stubbed (moto accepts any
role), and the wording of the other AWS failures is checked on the exceptions botocore raises.
"""

from __future__ import annotations

import subprocess

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
)
from botocore.stub import Stubber
from deploy_testkit import REGION, create_args, run_deploy

from deploy import cli, errors, package

MISSING_BUCKET = "no-such-bucket-qa"
BAD_ROLE = "not-an-arn-but-long-enough"  # moto would take it: CreateModel checks no pattern there
UNASSUMABLE = "arn:aws:iam::123456789012:role/NoTrustForSageMaker"


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def model_dir(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "distilbert"}')
    return model


def package_upload(aws, model_dir, archive, *debug: str) -> subprocess.CompletedProcess:
    command = ["package", str(model_dir), "--output", str(archive), "--upload", f"s3://{MISSING_BUCKET}/qa/"]
    return run_deploy([*debug, *command] if debug[:1] == ("--debug",) else [*command, *debug], aws.env)


def test_upload_to_a_missing_bucket_is_one_line(aws, model_dir, tmp_path):
    proc = package_upload(aws, model_dir, tmp_path / "out" / "model.tar.gz")
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert f"s3://{MISSING_BUCKET}/qa/model.tar.gz" in line
    assert line.endswith(
        f"bucket {MISSING_BUCKET} does not exist; create it (aws s3 mb s3://{MISSING_BUCKET}) "
        "or pass an existing bucket to --upload"
    )
    # Checked before the build: no archive made for nothing.
    assert not (tmp_path / "out" / "model.tar.gz").exists()


def test_upload_failed_by_s3_itself_is_one_line(aws, tmp_path):
    """The bucket gone between the check and the upload: boto3's S3UploadFailedError (PutObject)."""
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"archive")
    with pytest.raises(Exception) as caught:
        package.upload(aws.client("s3"), archive, f"s3://{MISSING_BUCKET}/qa/")
    assert errors.describe(caught.value) == (
        1,
        f"upload of {archive} to s3://{MISSING_BUCKET}/qa/model.tar.gz failed (PutObject, "
        f"NoSuchBucket): The specified bucket does not exist; create it (aws s3 mb "
        f"s3://{MISSING_BUCKET}) or pass an existing bucket to --upload",
    )


@pytest.mark.parametrize("before_subcommand", [True, False], ids=["debug-first", "debug-last"])
def test_debug_shows_the_traceback_after_the_line(aws, model_dir, tmp_path, before_subcommand):
    archive = tmp_path / "out" / "model.tar.gz"
    if before_subcommand:
        proc = package_upload(aws, model_dir, archive, "--debug")
    else:
        proc = package_upload(aws, model_dir, archive, "--region", REGION, "--debug")
    assert proc.returncode == 1
    first, *rest = proc.stderr.splitlines()
    assert first.startswith(f"error: upload of {archive} to s3://{MISSING_BUCKET}/")
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1].startswith("boto3.exceptions.S3UploadFailedError: ")


def test_malformed_role_is_one_line_and_nothing_is_created(aws):
    proc = run_deploy(create_args(BAD_ROLE), aws.env)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: --role '{BAD_ROLE}' is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME); pass "
        "--role with the ARN of an IAM role SageMaker can assume (trust policy for sagemaker.amazonaws.com)"
    )
    assert aws.client("sagemaker").list_models()["Models"] == []


def test_missing_model_dir_is_one_line(offline, tmp_path):
    proc = run_deploy(["package", str(tmp_path / "nowhere"), "--output", str(tmp_path / "m.tar.gz")], offline)
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"error: model directory {tmp_path / 'nowhere'} does not exist; pass the directory "
        "save_pretrained wrote (config.json, weights, tokenizer files)"
    )


def test_missing_body_file_is_one_line(offline, tmp_path):
    env = {**offline, "AWS_REGION": REGION}
    proc = run_deploy(["invoke", "--name", "qa", "--body-file", str(tmp_path / "nope.json")], env)
    assert proc.returncode == 2
    assert (
        one_error_line(proc) == f"error: {tmp_path / 'nope.json'}: No such file or directory; check the path"
    )


def test_update_of_unknown_endpoint_names_the_fix(aws):
    proc = run_deploy(["update", "--name", "nowhere", "--instance-count", "2"], aws.env)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith("error: DescribeEndpoint failed (ValidationException): Could not find endpoint")
    assert line.endswith("; check --name and --region (aws sagemaker list-endpoints)")


# In process, with stubbed or failing clients.


@pytest.fixture
def sagemaker_stub():
    client = boto3.client(
        "sagemaker", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stub:
        yield (lambda service: client), stub
        stub.assert_no_pending_responses()


def test_role_sagemaker_cannot_assume_is_one_line(sagemaker_stub, capsys):
    clients, stub = sagemaker_stub
    stub.add_client_error(
        "create_model",
        service_error_code="ValidationException",
        http_status_code=400,
        service_message=f"Could not assume role {UNASSUMABLE}. Please ensure that the role exists "
        "and allows principal 'sagemaker.amazonaws.com' to assume the role.",
    )
    assert cli.main(create_args(UNASSUMABLE), clients=clients, environ={}) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: CreateModel failed (ValidationException): Could not assume role {UNASSUMABLE}. "
        "Please ensure that the role exists and allows principal 'sagemaker.amazonaws.com' to "
        "assume the role; pass --role with the ARN of an IAM role SageMaker can assume (trust "
        "policy for sagemaker.amazonaws.com)\n"
    )


def test_role_refused_without_naming_it_names_the_role_given(sagemaker_stub, capsys):
    clients, stub = sagemaker_stub
    stub.add_client_error(
        "create_model", service_error_code="NoSuchEntity", service_message="The role cannot be found."
    )
    assert cli.main(create_args(UNASSUMABLE), clients=clients, environ={}) == 1
    assert capsys.readouterr().err.endswith(
        f"(trust policy for sagemaker.amazonaws.com), not {UNASSUMABLE}\n"
    )


def failing(exc: BaseException):
    def clients(service):
        raise exc

    return clients


def test_unexpected_exception_is_one_line_and_debug_raises_it(capsys):
    code = cli.main(
        ["delete", "--name", "qa"], clients=failing(RuntimeError("boom\nsecond line")), environ={}
    )
    assert code == 1
    assert capsys.readouterr().err == (
        "error: unexpected RuntimeError: boom second line (run with --debug for the traceback)\n"
    )
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--debug", "delete", "--name", "qa"], clients=failing(RuntimeError("boom")), environ={})
    assert capsys.readouterr().err.startswith("error: unexpected RuntimeError: boom")


def test_failed_graph_export_shows_its_output_then_one_error_line(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        package.subprocess,
        "run",
        lambda command, **kw: subprocess.CompletedProcess(
            command, 1, stdout="", stderr="Traceback (most recent call last):\nOSError: no config\n"
        ),
    )
    argv = ["package", str(model_dir), "--output", str(tmp_path / "m.tar.gz"), "--graphs-from-image", "qa:1"]
    assert (
        cli.main([*argv, "--precision", "fp32"], clients=failing(AssertionError("no AWS")), environ={}) == 2
    )
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == (
        "error: making the graphs with qa:1 failed (exit 1): OSError: no config (the end of its output is above)"
    )
    assert lines[-3:-1] == ["  Traceback (most recent call last):", "  OSError: no config"]


def client_error(
    code: str, message: str, operation: str = "CreateEndpoint", status: int = 400
) -> ClientError:
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


@pytest.mark.parametrize(
    "exc, code, expected",
    [
        (
            NoCredentialsError(),
            1,
            "no usable AWS credentials (Unable to locate credentials); configure AWS credentials: "
            "aws configure, or AWS_PROFILE / AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run "
            "where a role is attached",
        ),
        (
            client_error("ThrottlingException", "Rate exceeded"),
            1,
            "CreateEndpoint failed (ThrottlingException): Rate exceeded; AWS is throttling these "
            "requests (they were already retried with back-off): wait a minute and run it again, "
            "or ask for a higher request quota",
        ),
        (
            client_error(
                "ValidationError", "Endpoint qa of account 123456789012 not found.", "InvokeEndpoint"
            ),
            1,
            "InvokeEndpoint failed (ValidationError): Endpoint qa of account 123456789012 not found; "
            "check --name and --region (aws sagemaker list-endpoints)",
        ),
        (
            client_error("ValidationException", 'Could not find model "qa-1".', "CreateTransformJob"),
            1,
            'CreateTransformJob failed (ValidationException): Could not find model "qa-1"; check the '
            "model name (--model) and --region (aws sagemaker list-models)",
        ),
        (
            client_error("ValidationException", 'Cannot create already existing endpoint "arn:x".'),
            1,
            'CreateEndpoint failed (ValidationException): Cannot create already existing endpoint "arn:x"; '
            "use `update` to change an existing endpoint, or `delete` it first, or pick another --name",
        ),
        (
            client_error(
                "ValidationException", "Could not find model data at s3://m/model.tar.gz.", "CreateModel"
            ),
            1,
            "CreateModel failed (ValidationException): Could not find model data at s3://m/model.tar.gz; "
            "check --model-data: upload the archive with `python -m deploy package MODEL_DIR --upload "
            "s3://BUCKET/PREFIX/`, in the endpoint's region, readable by the role",
        ),
        (
            client_error(
                "ValidationException",
                "Requested image 1.dkr.ecr.us-east-1.amazonaws.com/qa:x not found.",
                "CreateModel",
            ),
            1,
            "CreateModel failed (ValidationException): Requested image 1.dkr.ecr.us-east-1.amazonaws.com/qa:x "
            "not found; check --image: push it to ECR first, in the endpoint's region, readable by the role",
        ),
        (
            client_error("ResourceLimitExceeded", "The account-level service limit is 2 Instances."),
            1,
            "CreateEndpoint failed (ResourceLimitExceeded): The account-level service limit is 2 "
            "Instances; an account quota is reached: delete what you no longer use, or request an "
            "increase (Service Quotas, Amazon SageMaker)",
        ),
        (
            client_error("ExpiredTokenException", "The security token included in the request is expired"),
            1,
            "AWS refused the credentials for CreateEndpoint (ExpiredTokenException): The security "
            "token included in the request is expired; the credentials have expired: refresh them "
            "(aws sso login, or new session credentials)",
        ),
        (
            client_error("InternalFailure", "<html>\n<h1>oops</h1>\n</html>", status=500),
            1,
            "CreateEndpoint failed (InternalFailure): <html> <h1>oops</h1> </html>; a failure on "
            "AWS's side: run it again later",
        ),
        (
            client_error("SomethingNew", "An odd\nmessage."),
            1,
            "CreateEndpoint failed (SomethingNew): An odd message.",
        ),
        (
            EndpointConnectionError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com/"),
            1,
            'cannot reach AWS: Could not connect to the endpoint URL: "https://api.sagemaker.us-east-1.'
            'amazonaws.com/"; check the network (HTTPS_PROXY if you need a proxy), --region, and '
            "AWS_ENDPOINT_URL if it is set",
        ),
        (
            ParamValidationError(report="Invalid length for parameter ExecutionRoleArn, value: 3"),
            2,
            "Parameter validation failed: Invalid length for parameter ExecutionRoleArn, value: 3; "
            "pass --role with the ARN of an IAM role SageMaker can assume (trust policy for "
            "sagemaker.amazonaws.com)",
        ),
        (
            PermissionError(13, "Permission denied", "/models/qa/model.safetensors"),
            2,
            "/models/qa/model.safetensors: Permission denied; check its permissions",
        ),
    ],
    ids=lambda value: value if isinstance(value, int) else None,
)
def test_failure_wording(exc, code, expected):
    assert errors.describe(exc) == (code, expected)
