"""Pure builders for SageMaker request parameters, and resource naming. No AWS calls here."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

VARIANT_NAME = "AllTraffic"
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
BATCH_STRATEGIES = ("MultiRecord", "SingleRecord")
DEFAULT_INVOCATION_RETRIES = 3  # SageMaker's own default for ModelClientConfig.InvocationsMaxRetries
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_STAMP = re.compile(r"-\d{8}-\d{6}-\d{3}$")
_ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$")
# SageMaker's pattern for ExecutionRoleArn (CreateModel), checked here so a typo fails before any call.
_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$")
ROLE_FIX = (
    "pass --role with the ARN of an IAM role SageMaker can assume (trust policy for sagemaker.amazonaws.com)"
)


class RequestError(ValueError):
    """Options that cannot make a valid request; the message names the option."""


def check_name(name: str, what: str = "--name") -> str:
    if not _NAME.match(name):
        raise RequestError(
            f"{what} {name!r}: use 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def stamped(base: str) -> str:
    """`base-YYYYmmdd-HHMMSS-mmm`, at most 63 characters: unique names for models and configs."""
    now = time.time()
    suffix = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{int(now * 1000) % 1000:03d}"
    return f"{base[: 63 - len(suffix) - 1].rstrip('-')}-{suffix}"


def unstamped(name: str) -> str:
    """The base of a `stamped` name (unchanged when it carries no stamp)."""
    return _STAMP.sub("", name)


def check_role(role: str) -> str:
    if not _ROLE_ARN.match(role) or len(role) > 2048:
        raise RequestError(
            f"--role {role!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME); {ROLE_FIX}"
        )
    return role


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """KEY=VALUE strings -> dict; later pairs win."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise RequestError(f"--env {pair!r}: expected KEY=VALUE with KEY like SAGEMAKER_NAME")
        env[key] = value
    if len(env) > 100:
        raise RequestError("--env: SageMaker allows at most 100 environment variables")
    return env


def model_request(
    name: str,
    image: str,
    role: str,
    model_data: str | None,
    env: dict[str, str],
    model_in_image: bool = False,
    multi_model: bool = False,
) -> dict:
    check_role(role)
    if multi_model:
        # SageMaker loads s3://prefix/<TargetModel> on first use; the image serves them with MMS.
        if not model_data or not model_data.startswith("s3://") or not model_data.endswith("/"):
            raise RequestError(
                "--multi-model needs --model-data s3://BUCKET/PREFIX/ (the prefix that "
                "holds the model.tar.gz files, ending in /)"
            )
        container = {
            "Image": image,
            "Mode": "MultiModel",
            "ModelDataUrl": model_data,
            "Environment": dict(env),
        }
        return {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": role}
    if not model_data and not env.get("HF_MODEL_ID") and not model_in_image:
        raise RequestError(
            "give --model-data s3://.../model.tar.gz, or --hf-model-id to load "
            "the model from the Hugging Face Hub at start-up, or --model-in-image "
            "when the image was built with a model baked in"
        )
    container: dict = {"Image": image, "Mode": "SingleModel", "Environment": dict(env)}
    if model_data:
        container["ModelDataUrl"] = model_data
    return {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": role}


def production_variant(
    model_name: str,
    *,
    instance_type: str | None = None,
    instance_count: int = 1,
    serverless_memory: int | None = None,
    serverless_concurrency: int | None = None,
    startup_timeout: int | None = None,
    weight: float = 1.0,
    variant_name: str = VARIANT_NAME,
) -> dict:
    variant: dict = {
        "VariantName": variant_name,
        "ModelName": model_name,
        "InitialVariantWeight": float(weight),
    }
    if serverless_memory is not None or serverless_concurrency is not None:
        if serverless_memory not in SERVERLESS_MEMORY_MB:
            raise RequestError(f"--serverless-memory must be one of {SERVERLESS_MEMORY_MB} (MB)")
        concurrency = serverless_concurrency or 1
        if not 1 <= concurrency <= 200:
            raise RequestError("--serverless-concurrency must be between 1 and 200")
        variant["ServerlessConfig"] = {"MemorySizeInMB": serverless_memory, "MaxConcurrency": concurrency}
        return variant
    if not instance_type:
        raise RequestError("give --instance-type (e.g. ml.m5.xlarge), or --serverless-memory")
    if instance_count < 1:
        raise RequestError("--instance-count must be at least 1")
    variant["InstanceType"] = instance_type
    variant["InitialInstanceCount"] = instance_count
    if startup_timeout is not None:
        variant["ContainerStartupHealthCheckTimeoutInSeconds"] = startup_timeout
    return variant


def endpoint_config_request(
    name: str,
    variants: list[dict],
    *,
    async_output: str | None = None,
    async_failure: str | None = None,
    async_max_concurrent: int | None = None,
) -> dict:
    request: dict = {"EndpointConfigName": name, "ProductionVariants": variants}
    if async_output:
        if any("ServerlessConfig" in v for v in variants):
            raise RequestError("--async-output cannot be combined with a serverless endpoint")
        output: dict = {"S3OutputPath": async_output}
        if async_failure:
            output["S3FailurePath"] = async_failure
        request["AsyncInferenceConfig"] = {"OutputConfig": output}
        if async_max_concurrent:
            request["AsyncInferenceConfig"]["ClientConfig"] = {
                "MaxConcurrentInvocationsPerInstance": async_max_concurrent
            }
    return request


def variant_from_description(described: dict) -> dict:
    """A ProductionVariant request from a DescribeEndpointConfig variant (drops read-only keys)."""
    keep = (
        "VariantName",
        "ModelName",
        "InitialVariantWeight",
        "InstanceType",
        "InitialInstanceCount",
        "ServerlessConfig",
        "ContainerStartupHealthCheckTimeoutInSeconds",
        "ModelDataDownloadTimeoutInSeconds",
        "VolumeSizeInGB",
        "AcceleratorType",
    )
    return {key: described[key] for key in keep if key in described}


@dataclass
class TransformSpec:
    """What a Batch Transform job reads and writes, on what instances, in what mini-batches."""

    input_uri: str
    output_uri: str
    instance_type: str
    instance_count: int = 1
    max_concurrent: int | None = None
    max_payload_mb: int | None = None
    batch_strategy: str | None = None
    invocation_timeout: int | None = None
    invocation_retries: int | None = None


def transform_job_request(job_name: str, model_name: str, job: TransformSpec) -> dict:
    """Batch Transform over JSON Lines: one request per line in, one answer per line out.

    MaxPayloadInMB, MaxConcurrentTransforms and BatchStrategy are sent only when given (the
    strategy is MultiRecord when a size is given without it); left out, SageMaker takes the
    container's GET /execution-parameters. ModelClientConfig only with a timeout or retries."""
    if not job.input_uri.startswith("s3://") or not job.output_uri.startswith("s3://"):
        raise RequestError("--input and --output must be s3:// URIs")
    sizing = _transform_sizing(job.max_concurrent, job.max_payload_mb, job.batch_strategy)
    request: dict = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        **sizing,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": job.input_uri}},
            "ContentType": "application/jsonlines",
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": job.output_uri,
            "Accept": "application/jsonlines",
            "AssembleWith": "Line",
        },
        "TransformResources": {"InstanceType": job.instance_type, "InstanceCount": job.instance_count},
    }
    client_config = model_client_config(job.invocation_timeout, job.invocation_retries)
    if client_config:
        request["ModelClientConfig"] = client_config
    return request


def _transform_sizing(
    max_concurrent: int | None, max_payload_mb: int | None, batch_strategy: str | None
) -> dict:
    sizing: dict = {}
    if max_payload_mb is not None:
        if not 0 < max_payload_mb <= 100:
            raise RequestError("--max-payload-mb must be between 1 and 100")
        sizing["MaxPayloadInMB"] = max_payload_mb
    if max_concurrent is not None:
        if max_concurrent < 1:
            raise RequestError("--max-concurrent must be at least 1 (leave it out for the container's value)")
        sizing["MaxConcurrentTransforms"] = max_concurrent
    if max_payload_mb is not None and max_concurrent is not None and max_payload_mb * max_concurrent > 100:
        raise RequestError(
            f"--max-concurrent {max_concurrent} x --max-payload-mb {max_payload_mb} is over SageMaker's "
            "100 MB limit: lower one of them"
        )
    if batch_strategy is not None:
        if batch_strategy not in BATCH_STRATEGIES:
            raise RequestError(f"--batch-strategy must be one of {', '.join(BATCH_STRATEGIES)}")
        sizing["BatchStrategy"] = batch_strategy
    elif sizing:
        sizing["BatchStrategy"] = "MultiRecord"
    return sizing


def model_client_config(timeout: int | None, retries: int | None) -> dict:
    """CreateTransformJob's ModelClientConfig ({} when neither is given)."""
    if timeout is None and retries is None:
        return {}
    if timeout is not None and not 1 <= timeout <= 3600:
        raise RequestError("--invocation-timeout must be between 1 and 3600 seconds")
    if retries is not None and not 0 <= retries <= 3:
        raise RequestError("--invocation-retries must be between 0 and 3")
    config = {"InvocationsMaxRetries": DEFAULT_INVOCATION_RETRIES if retries is None else retries}
    if timeout is not None:
        config["InvocationsTimeoutInSeconds"] = timeout
    return config


def scaling_requests(
    endpoint: str,
    variant: str,
    *,
    min_capacity: int,
    max_capacity: int,
    target: float,
    scale_in_cooldown: int,
    scale_out_cooldown: int,
) -> tuple[dict, dict]:
    """(RegisterScalableTarget, PutScalingPolicy) for target tracking on invocations per instance."""
    if min_capacity < 1 or max_capacity < min_capacity:
        raise RequestError("need 1 <= --min <= --max")
    if target <= 0:
        raise RequestError("--target (invocations per instance per minute) must be positive")
    resource_id = f"endpoint/{endpoint}/variant/{variant}"
    register = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": min_capacity,
        "MaxCapacity": max_capacity,
    }
    policy = {
        "PolicyName": f"{endpoint}-{variant}-invocations",
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id,
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(target),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleInCooldown": scale_in_cooldown,
            "ScaleOutCooldown": scale_out_cooldown,
        },
    }
    return register, policy
