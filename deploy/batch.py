"""Batch Transform over JSON Lines in S3: one QA request per line in, one answer per line out.

Mini-batch size, concurrency and strategy are the container's (GET /execution-parameters)
unless given. With --wait, the job's output lines are counted: answers, and per-record errors
(a line `{"error": {...}}` in place of that record's answer).
"""

from __future__ import annotations

import json

from botocore.exceptions import BotoCoreError, ClientError

from deploy import errors, resources
from deploy.endpoint import ModelSpec
from deploy.resources import RequestError, TransformSpec
from deploy.waiting import WaitSpec, wait_until

TIMEOUT_ENV = "SAGEMAKER_MODEL_SERVER_TIMEOUT"  # the container's per-invocation budget
BATCH_TIMEOUT_S = 600  # its default in Batch Transform, and SageMaker's InvocationsTimeoutInSeconds
OUTPUT_SUFFIX = ".out"  # SageMaker writes <input key>.out under the output path
READ_CHUNK = 1 << 20


def batch(
    clients,
    job: TransformSpec,
    *,
    model_name: str | None = None,
    model: ModelSpec | None = None,
    job_name: str | None = None,
    wait: WaitSpec = WaitSpec(wait=False, timeout=3600.0, poll=30.0),
    log=print,
) -> dict:
    sm = clients("sagemaker")
    result: dict = {}
    model_request = None
    if model_name and model and model != ModelSpec():
        raise RequestError(
            "give either --model (an existing SageMaker model) or --image/--role/"
            "--model-data to create one, not both"
        )
    if not model_name:
        model_name = resources.stamped(job_name or "qa-batch")
        model_request = _model_request(model_name, model, job.invocation_timeout)
    if job_name:
        resources.check_name(job_name, "--job-name")
    else:
        job_name = resources.stamped(resources.unstamped(model_name))
    request = resources.transform_job_request(job_name, model_name, job)
    if model_request:
        sm.create_model(**model_request)
        log(f"model {model_name}: created")
        result["model_created"] = True
    elif job.invocation_timeout is not None:
        _check_model_timeout(sm, model_name, job.invocation_timeout, log)
    sm.create_transform_job(**request)
    log(f"transform job {job_name}: created ({job.input_uri} -> {job.output_uri})")
    status = "InProgress"
    if wait.wait:
        what = f"transform job {job_name}"
        described = wait_until(
            sm, "transform_job_completed_or_stopped", what, wait, log, TransformJobName=job_name
        )
        status = described["TransformJobStatus"]
        result.update(
            _report(clients("s3"), job_name, status, job.output_uri, described.get("CreationTime"), log)
        )
    result.update(
        {"transform_job": job_name, "model": model_name, "status": status, "output": job.output_uri}
    )
    return result


def _model_request(name: str, model: ModelSpec | None, invocation_timeout: int | None) -> dict:
    """CreateModel for the job's own model; with --invocation-timeout the container's budget matches."""
    if not model or not model.image or not model.role:
        raise RequestError(
            "batch needs --model NAME, or --image and --role (and --model-data "
            "or --hf-model-id) to create a model"
        )
    env = dict(model.env)
    if invocation_timeout is not None:
        given = env.get(TIMEOUT_ENV)
        if given is not None and given != str(invocation_timeout):
            raise RequestError(
                f"--env {TIMEOUT_ENV}={given} disagrees with --invocation-timeout {invocation_timeout}: "
                f"drop the --env one (--invocation-timeout sets it)"
            )
        env[TIMEOUT_ENV] = str(invocation_timeout)
    return resources.model_request(name, model.image, model.role, model.model_data, env, model.in_image)


def _check_model_timeout(sm, model_name: str, invocation_timeout: int, log) -> None:
    """An existing model keeps its own budget: say so when it differs from --invocation-timeout."""
    container = sm.describe_model(ModelName=model_name).get("PrimaryContainer") or {}
    budget = (container.get("Environment") or {}).get(TIMEOUT_ENV, str(BATCH_TIMEOUT_S))
    if budget != str(invocation_timeout):
        log(
            f"note: model {model_name} has {TIMEOUT_ENV}={budget} s, not {invocation_timeout}: it sizes "
            f"its mini-batches for {budget} s; to match, let batch create the model (--image/--role "
            f"instead of --model) or pass --invocation-timeout {budget}"
        )


def _report(s3, job_name: str, status: str, output_uri: str, since, log) -> dict:
    """Count the finished job's records and print them in one line; {} when they cannot be read."""
    try:
        counts = count_records(s3, output_uri, since=since)
    except (ClientError, BotoCoreError) as exc:
        log(f"transform job {job_name}: {status}; records not counted: {errors.describe(exc)[1]}")
        return {}
    records, failed, failed_outputs = counts["records"], counts["failed_records"], counts["failed_outputs"]
    head = f"transform job {job_name}: {status}; {records:,} records: {records - failed:,} answered, {failed:,} failed"
    if counts["stale_outputs"]:
        log(f"note: {counts['stale_outputs']} older .out files under {output_uri} (earlier jobs) not counted")
    if not counts["outputs"]:
        log(f"{head} (no .out files under {output_uri}: check that --input holds non-empty .jsonl files)")
    elif not failed:
        log(f"{head} ({counts['outputs']} .out files under {output_uri})")
    else:
        others = len(failed_outputs) - 1
        more = (
            f", and the same for the {others} other .out file{'s' * (others > 1)} in failed_outputs"
            if others
            else ""
        )
        log(
            f'{head} (lines with "error"; list them with: aws s3 cp {failed_outputs[0]} - | '
            f"jq -c 'select(.error)'{more})"
        )
    result = {"records": records, "failed_records": failed}
    if failed_outputs:
        result["failed_outputs"] = failed_outputs
    return result


def count_records(s3, output_uri: str, *, since=None) -> dict:
    """Lines and per-record error lines in the .out objects under `output_uri`, read as streams.

    Objects last modified before `since` (the job's CreationTime) are left to earlier jobs.
    Returns records, failed_records, outputs (objects counted), stale_outputs (skipped) and
    failed_outputs (s3:// URIs of the objects holding error lines)."""
    bucket, _, key = output_uri.removeprefix("s3://").partition("/")
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    since = since.replace(microsecond=0) if since is not None else None  # S3 keeps whole seconds
    counts: dict = {"records": 0, "failed_records": 0, "outputs": 0, "stale_outputs": 0, "failed_outputs": []}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for listed in page.get("Contents", []):
            if not listed["Key"].endswith(OUTPUT_SUFFIX):
                continue
            if since is not None and listed["LastModified"] < since:
                counts["stale_outputs"] += 1
                continue
            records, failed = count_lines(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"])
            counts["outputs"] += 1
            counts["records"] += records
            counts["failed_records"] += failed
            if failed:
                counts["failed_outputs"].append(f"s3://{bucket}/{listed['Key']}")
    return counts


def count_lines(body) -> tuple[int, int]:
    """(non-blank lines, lines that are a JSON object with a truthy "error") of a StreamingBody."""
    records = failed = 0
    for line in body.iter_lines(chunk_size=READ_CHUNK):
        if not line.strip():
            continue
        records += 1
        if b'"error"' in line and is_error_line(line):
            failed += 1
    return records, failed


def is_error_line(line: bytes) -> bool:
    """The line `jq 'select(.error)'` would keep: a JSON object whose "error" is not null/false."""
    try:
        parsed = json.loads(line)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("error") not in (None, False)
