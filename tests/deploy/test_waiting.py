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


def wait_for_job(statuses: list[str], timeout: float = 60) -> tuple[dict, list[str]]:
    sm = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t")
    logged: list[str] = []
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


def test_a_stopped_job_is_final_and_each_status_change_is_printed_once():
    described, logged = wait_for_job(["InProgress", "InProgress", "Stopping", "Stopped"])
    assert described["TransformJobStatus"] == "Stopped"
    assert [line.split(" (")[0] for line in logged] == [
        "transform job qa-1: InProgress",
        "transform job qa-1: Stopping",
        "transform job qa-1: Stopped",
    ]


def test_a_failed_job_raises_with_its_reason():
    with pytest.raises(WaitError, match=r"^transform job qa-1 is Failed: no reason given$"):
        wait_for_job(["Failed"])
