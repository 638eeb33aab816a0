"""`update` and the AWS error paths, with botocore's Stubber.

moto 5.2.5 answers UpdateEndpoint with a 500 (not implemented), so the update path cannot
run against the moto server. Here the real CLI entry point (`deploy.cli.main`) runs with real
boto3 clients whose responses are stubbed: the Stubber checks every call, in order, with its
exact parameters. "No downtime" is SageMaker's blue/green UpdateEndpoint; what the tool must
get right is shown by the call order: the new model and config are created first, the
endpoint is switched with UpdateEndpoint (never deleted or re-created), and the old config
and model are deleted only after the endpoint is InService again, and only when asked.
"""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import Stubber
from deploy_testkit import IMAGE, REGION, ROLE, create_args

from deploy import cli, resources

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OLD = "qa-20250101-000000-000"
NEW = "qa-20260101-120000-000"
NEW_IMAGE = IMAGE.replace(":abc1234", ":def5678")


def arn(kind: str, name: str = "qa") -> str:
    return f"arn:aws:sagemaker:{REGION}:123456789012:{kind}/{name}"


@pytest.fixture
def stubbed(monkeypatch):
    monkeypatch.setattr(resources, "stamped", lambda base: f"{base}-20260101-120000-000")
    made = {}
    stubbers = {}
    for service in ("sagemaker", "application-autoscaling", "sagemaker-runtime"):
        made[service] = boto3.client(
            service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        stubbers[service] = Stubber(made[service])
        stubbers[service].activate()
    yield made.__getitem__, stubbers
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def endpoint(status: str, config: str = OLD, **extra) -> dict:
    return {
        "EndpointName": "qa",
        "EndpointArn": arn("endpoint"),
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        **extra,
    }


def endpoint_config(name: str, model: str, **variant) -> dict:
    base = {
        "VariantName": "AllTraffic",
        "ModelName": model,
        "InstanceType": "ml.m5.xlarge",
        "InitialInstanceCount": 1,
        "InitialVariantWeight": 1.0,
    }
    return {
        "EndpointConfigName": name,
        "EndpointConfigArn": arn("endpoint-config", name),
        "ProductionVariants": [{**base, **variant}],
        "CreationTime": NOW,
    }


def old_model() -> dict:
    return {
        "ModelName": OLD,
        "ModelArn": arn("model", OLD),
        "ExecutionRoleArn": ROLE,
        "CreationTime": NOW,
        "PrimaryContainer": {
            "Image": IMAGE,
            "ModelDataUrl": "s3://m/v1/model.tar.gz",
            "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"},
        },
    }


def expect_current(sm: Stubber, config: dict | None = None) -> None:
    """The endpoint as the update finds it: InService on the old config (`config` describes it)."""
    config = config or endpoint_config(OLD, OLD)
    sm.add_response("describe_endpoint", endpoint("InService"), {"EndpointName": "qa"})
    sm.add_response("describe_endpoint_config", config, {"EndpointConfigName": OLD})


def expect_wait(sm: Stubber, config: str) -> None:
    sm.add_response("describe_endpoint", endpoint("Updating", config), {"EndpointName": "qa"})
    sm.add_response("describe_endpoint", endpoint("InService", config), {"EndpointName": "qa"})


def expect_switch(sm: Stubber, model: str, variant: dict, *, in_service: bool = True, **config) -> None:
    """A new endpoint config NEW around `model` (one variant: `variant` on top of the basics), the
    switch to it with UpdateEndpoint, then (`in_service`) the wait until it serves on NEW.
    `config` are other CreateEndpointConfig fields."""
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": arn("endpoint-config", NEW)},
        {
            "EndpointConfigName": NEW,
            **config,
            "ProductionVariants": [
                {"VariantName": "AllTraffic", "ModelName": model, "InitialVariantWeight": 1.0, **variant}
            ],
        },
    )
    sm.add_response(
        "update_endpoint", {"EndpointArn": arn("endpoint")}, {"EndpointName": "qa", "EndpointConfigName": NEW}
    )
    if in_service:
        expect_wait(sm, NEW)


def expect_new_model(sm: Stubber, image: str, model_data: str, env: dict[str, str]) -> None:
    """The update's new model NEW, after the old one is described."""
    sm.add_response("describe_model", old_model(), {"ModelName": OLD})
    container = {"Image": image, "Mode": "SingleModel", "ModelDataUrl": model_data, "Environment": env}
    sm.add_response(
        "create_model",
        {"ModelArn": arn("model", NEW)},
        {"ModelName": NEW, "ExecutionRoleArn": ROLE, "PrimaryContainer": container},
    )


def run(clients, capsys, *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(list(args), clients=clients, environ={})
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def run_update(clients, capsys, *options: str) -> tuple[int, dict | None, str]:
    """`update` of endpoint qa, polling without a pause."""
    return run(clients, capsys, "update", "--name", "qa", *options, "--poll", "0")


def test_update_new_image_and_capacity_is_blue_green(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    expect_current(sm)
    expect_new_model(
        sm,
        NEW_IMAGE,
        "s3://m/v1/model.tar.gz",
        {"SAGEMAKER_MODEL_SERVER_WORKERS": "4", "SAGEMAKER_CONTAINER_LOG_LEVEL": "DEBUG"},
    )
    expect_switch(sm, NEW, {"InstanceType": "ml.c5.2xlarge", "InitialInstanceCount": 3})
    code, out, err = run_update(
        clients,
        capsys,
        "--image",
        NEW_IMAGE,
        "--env",
        "SAGEMAKER_MODEL_SERVER_WORKERS=4",
        "--env",
        "SAGEMAKER_CONTAINER_LOG_LEVEL=DEBUG",
        "--instance-type",
        "ml.c5.2xlarge",
        "--instance-count",
        "3",
    )
    assert code == 0, err
    assert out == {
        "endpoint": "qa",
        "endpoint_config": NEW,
        "previous_endpoint_config": OLD,
        "status": "InService",
        "model": NEW,
    }
    assert f"--endpoint-config {OLD}" in err  # the roll-back line


def test_update_capacity_only_reuses_the_model(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    expect_current(sm)
    # A capacity-only update: a new endpoint config around the same model.
    expect_switch(sm, OLD, {"InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 4})
    code, out, err = run_update(clients, capsys, "--instance-count", "4")
    assert code == 0, err
    assert "model" not in out


def test_update_serverless_memory_stays_serverless(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    old = endpoint_config(OLD, OLD)
    old["ProductionVariants"] = [
        {
            "VariantName": "AllTraffic",
            "ModelName": OLD,
            "InitialVariantWeight": 1.0,
            "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
        }
    ]
    expect_current(sm, old)
    expect_switch(sm, OLD, {"ServerlessConfig": {"MemorySizeInMB": 4096, "MaxConcurrency": 5}})
    code, _, err = run_update(clients, capsys, "--serverless-memory", "4096")
    assert code == 0, err


def test_update_keeps_async_inference_config(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    async_config = {
        "OutputConfig": {"S3OutputPath": "s3://answers/out/"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    expect_current(sm, {**endpoint_config(OLD, OLD), "AsyncInferenceConfig": async_config})
    expect_switch(
        sm,
        OLD,
        {"InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 2},
        AsyncInferenceConfig=async_config,
    )
    code, _, err = run_update(clients, capsys, "--instance-count", "2")
    assert code == 0, err


def test_update_delete_old_after_in_service(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    expect_current(sm)
    expect_new_model(sm, IMAGE, "s3://m/v2/model.tar.gz", {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    expect_switch(sm, NEW, {"InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1})
    sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": OLD})
    sm.add_response("describe_endpoint_config", endpoint_config(NEW, NEW), {"EndpointConfigName": NEW})
    sm.add_response("delete_model", {}, {"ModelName": OLD})
    code, out, err = run_update(clients, capsys, "--model-data", "s3://m/v2/model.tar.gz", "--delete-old")
    assert code == 0, err
    assert out["model"] == NEW


def test_update_roll_back_to_existing_config(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    sm.add_response("describe_endpoint", endpoint("InService", NEW), {"EndpointName": "qa"})
    sm.add_response("describe_endpoint_config", endpoint_config(NEW, NEW), {"EndpointConfigName": NEW})
    sm.add_response(
        "update_endpoint", {"EndpointArn": arn("endpoint")}, {"EndpointName": "qa", "EndpointConfigName": OLD}
    )
    expect_wait(sm, OLD)
    code, out, err = run_update(clients, capsys, "--endpoint-config", OLD)
    assert code == 0, err
    assert out["endpoint_config"] == OLD and out["previous_endpoint_config"] == NEW


def test_update_failure_reports_reason_and_keeps_old(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    expect_current(sm)
    expect_switch(sm, OLD, {"InstanceType": "ml.g5.xlarge", "InitialInstanceCount": 1}, in_service=False)
    sm.add_response("describe_endpoint", endpoint("Updating", NEW), {"EndpointName": "qa"})
    sm.add_response("describe_endpoint", endpoint("RollingBack", NEW), {"EndpointName": "qa"})
    # SageMaker rolls a failed update back: the endpoint keeps serving the old config.
    sm.add_response("describe_endpoint", endpoint("InService", OLD), {"EndpointName": "qa"})
    code, _, err = run_update(clients, capsys, "--instance-type", "ml.g5.xlarge", "--delete-old")
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith(f"error: update of endpoint qa failed and was rolled back to {OLD}")
    assert "deleted" not in err  # --delete-old does nothing after a failed update


def test_update_refuses_mixing_roll_back_with_changes(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    expect_current(sm)
    code, _, err = run(
        clients, capsys, "update", "--name", "qa", "--endpoint-config", OLD, "--instance-count", "2"
    )
    assert code == 2 and "--endpoint-config" in err


@pytest.mark.parametrize("error_code", ["AccessDeniedException", "AccessDenied"])
def test_access_denied_is_one_line(stubbed, capsys, error_code):
    clients, stubs = stubbed
    stubs["sagemaker"].add_client_error(
        "create_model",
        service_error_code=error_code,
        http_status_code=400,
        service_message="User: arn:aws:iam::1:user/dev is not authorized to perform: "
        "sagemaker:CreateModel on resource: arn:aws:sagemaker:us-east-1:1:model/x",
    )
    code, _, err = run(clients, capsys, *create_args(ROLE))
    assert code == 1
    assert err.startswith(f"error: permission denied for CreateModel ({error_code}): User: ")
    assert err.count("\n") == 1


def test_pass_role_denied_is_one_line(stubbed, capsys):
    clients, stubs = stubbed
    stubs["sagemaker"].add_response("describe_endpoint", endpoint("InService"), {"EndpointName": "qa"})
    stubs["application-autoscaling"].add_client_error(
        "register_scalable_target",
        service_error_code="AccessDeniedException",
        http_status_code=400,
        service_message="not authorized to perform: iam:PassRole",
    )
    code, _, err = run(clients, capsys, "autoscale", "--name", "qa", "--max", "2")
    assert code == 1
    assert err == (
        "error: permission denied for RegisterScalableTarget (AccessDeniedException): "
        "not authorized to perform: iam:PassRole; check the IAM policy of the "
        "credentials in use (and the execution role passed with --role)\n"
    )


def test_create_failed_endpoint_reports_failure_reason(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    sm.add_response("create_model", {"ModelArn": arn("model", NEW)})
    sm.add_response("create_endpoint_config", {"EndpointConfigArn": arn("endpoint-config", NEW)})
    sm.add_response("create_endpoint", {"EndpointArn": arn("endpoint")})
    sm.add_response("describe_endpoint", endpoint("Creating", NEW), {"EndpointName": "qa"})
    sm.add_response(
        "describe_endpoint",
        endpoint(
            "Failed",
            NEW,
            FailureReason="The primary container for production variant AllTraffic did "
            "not pass the ping health check.",
        ),
        {"EndpointName": "qa"},
    )
    code, _, err = run(clients, capsys, *create_args(ROLE, "--poll", "0"))
    assert code == 1
    assert err.splitlines()[-1] == (
        "error: endpoint qa is Failed: The primary container for "
        "production variant AllTraffic did not pass the ping health check."
    )


def test_wait_timeout_says_it_goes_on(stubbed, capsys):
    clients, stubs = stubbed
    sm = stubs["sagemaker"]
    for operation in ("create_model", "create_endpoint_config", "create_endpoint"):
        key = {
            "create_model": "ModelArn",
            "create_endpoint_config": "EndpointConfigArn",
            "create_endpoint": "EndpointArn",
        }[operation]
        sm.add_response(operation, {key: arn("x", NEW)})
    sm.add_response("describe_endpoint", endpoint("Creating", NEW), {"EndpointName": "qa"})
    code, _, err = run(clients, capsys, *create_args(ROLE, "--timeout", "0", "--poll", "0"))
    assert code == 1
    assert "still Creating after 0 s" in err
