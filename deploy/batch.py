"""Batch Transform over JSON Lines in S3: one QA request per line in, one answer per line out."""

from __future__ import annotations

from deploy import resources
from deploy.endpoint import ModelSpec
from deploy.resources import RequestError
from deploy.waiting import wait_for_transform


def batch(
    clients,
    *,
    input_uri: str,
    output_uri: str,
    instance_type: str,
    instance_count: int = 1,
    model_name: str | None = None,
    model: ModelSpec | None = None,
    job_name: str | None = None,
    max_concurrent: int | None = None,
    max_payload_mb: int = 6,
    wait: bool = False,
    timeout: float = 3600.0,
    poll: float = 30.0,
    log=print,
) -> dict:
    sm = clients("sagemaker")
    result: dict = {}
    if model_name and model and model != ModelSpec():
        raise RequestError(
            "give either --model (an existing SageMaker model) or --image/--role/"
            "--model-data to create one, not both"
        )
    if not model_name:
        if not model or not model.image or not model.role:
            raise RequestError(
                "batch needs --model NAME, or --image and --role (and --model-data "
                "or --hf-model-id) to create a model"
            )
        model_name = resources.stamped(job_name or "qa-batch")
        sm.create_model(
            **resources.model_request(
                model_name, model.image, model.role, model.model_data, model.env, model.in_image
            )
        )
        log(f"model {model_name}: created")
        result["model_created"] = True
    if job_name:
        resources.check_name(job_name, "--job-name")
    else:
        job_name = resources.stamped(resources.unstamped(model_name))
    request = resources.transform_job_request(
        job_name,
        model_name,
        input_uri,
        output_uri,
        instance_type=instance_type,
        instance_count=instance_count,
        max_concurrent=max_concurrent,
        max_payload_mb=max_payload_mb,
    )
    sm.create_transform_job(**request)
    log(f"transform job {job_name}: created ({input_uri} -> {output_uri})")
    status = "InProgress"
    if wait:
        status = wait_for_transform(sm, job_name, timeout=timeout, poll=poll, log=log)["TransformJobStatus"]
    result.update({"transform_job": job_name, "model": model_name, "status": status, "output": output_uri})
    return result
