"""deploy.waiting: boto3's waiter rules decide the final states; each status change is printed."""

from __future__ import annotations

import datetime as dt

import boto3
import pytest
from botocore.stub import Stubber
from deploy_testkit import REGION

from deploy.waiting import WaitError, WaitSpec, wait_until

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def transform_job(status: str) -> dict:
    return {
        "TransformJobName": "qa-1",
        "TransformJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:transform-job/qa-1",
        "TransformJobStatus": status,
        "ModelName": "qa",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://d/in/"}}},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
        "CreationTime": NOW,
    }


def wait_for_job(
    statuses: list[str], timeout: float = 60, logged: list[str] | None = None
) -> tuple[dict, list[str]]:
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")
    logged = [] if logged is None else logged
    with Stubber(sm) as stub:
        for status in statuses:
            stub.add_response("describe_transform_job", transform_job(status), {"TransformJobName": "qa-1"})
        described = wait_until(
            sm,
            "transform_job_completed_or_stopped",
            "transform job qa-1",
            WaitSpec(timeout=timeout, poll=0),
            logged.append,
            TransformJobName="qa-1",
        )
        stub.assert_no_pending_responses()
    return described, logged


def test_a_stopped_job_fails_the_wait_and_each_status_change_is_printed_once():
    logged: list[str] = []
    with pytest.raises(WaitError, match=r"^transform job qa-1 is Stopped"):
        wait_for_job(["InProgress", "InProgress", "Stopping", "Stopped"], logged=logged)
    assert [line.split(" (")[0] for line in logged] == [
        "transform job qa-1: InProgress",
        "transform job qa-1: Stopping",
        "transform job qa-1: Stopped",
    ]


def test_a_failed_job_raises_with_its_reason():
    with pytest.raises(WaitError, match=r"^transform job qa-1 is Failed: no reason given$"):
        wait_for_job(["Failed"])


@pytest.mark.parametrize("status", ["OutOfService", "UpdateRollbackFailed"])
def test_an_endpoint_that_stays_broken_fails_the_wait_at_once(status):
    """The waiter has no rule for these: without one the wait would poll until its timeout."""
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")
    endpoint = {
        "EndpointName": "qa",
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/qa",
        "EndpointConfigName": "qa-1",
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", endpoint, {"EndpointName": "qa"})
        with pytest.raises(WaitError, match=rf"^endpoint qa is {status}"):
            wait_until(
                sm,
                "endpoint_in_service",
                "endpoint qa",
                WaitSpec(timeout=600, poll=0),
                print,
                EndpointName="qa",
            )
        stub.assert_no_pending_responses()
