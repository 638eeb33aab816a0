"""Create, update (blue/green, no downtime) and delete a real-time, serverless or async endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

from deploy import resources, scaling
from deploy.resources import RequestError
from deploy.waiting import WaitError, WaitSpec, wait_until


@dataclass
class ModelSpec:
    image: str | None = None
    model_data: str | None = None
    role: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    in_image: bool = False
    multi_model: bool = False


@dataclass
class CapacitySpec:
    instance_type: str | None = None
    instance_count: int | None = None
    serverless_memory: int | None = None
    serverless_concurrency: int | None = None
    startup_timeout: int | None = None


def create(
    clients,
    name: str,
    model: ModelSpec,
    capacity: CapacitySpec,
    wait: WaitSpec = WaitSpec(),
    *,
    async_output=None,
    async_failure=None,
    async_max_concurrent=None,
    log=print,
) -> dict:
    """Model + endpoint config (named `name-<time>`) + endpoint `name`."""
    resources.check_name(name)
    if not model.image or not model.role:
        raise RequestError("create needs --image and --role")
    sm = clients("sagemaker")
    model_name = resources.stamped(name)
    model_request = resources.model_request(
        model_name, model.image, model.role, model.model_data, model.env, model.in_image, model.multi_model
    )
    variant = resources.production_variant(
        model_name,
        instance_type=capacity.instance_type,
        instance_count=capacity.instance_count or 1,
        serverless_memory=capacity.serverless_memory,
        serverless_concurrency=capacity.serverless_concurrency,
        startup_timeout=capacity.startup_timeout,
    )
    config_request = resources.endpoint_config_request(
        model_name,
        [variant],
        async_output=async_output,
        async_failure=async_failure,
        async_max_concurrent=async_max_concurrent,
    )
    sm.create_model(**model_request)
    log(f"model {model_name}: created")
    sm.create_endpoint_config(**config_request)
    log(f"endpoint config {model_name}: created")
    sm.create_endpoint(EndpointName=name, EndpointConfigName=model_name)
    log(f"endpoint {name}: creating")
    status = _maybe_wait(sm, name, wait, log)["EndpointStatus"]
    return {"endpoint": name, "endpoint_config": model_name, "model": model_name, "status": status}


def update(
    clients,
    name: str,
    model: ModelSpec,
    capacity: CapacitySpec,
    wait: WaitSpec = WaitSpec(),
    *,
    endpoint_config: str | None = None,
    delete_old: bool = False,
    log=print,
) -> dict:
    """Point endpoint `name` at a new endpoint config (or an existing one, for a roll-back).

    SageMaker updates by blue/green: the new fleet serves before the old one is removed, so
    the endpoint keeps answering throughout. The variant name is kept, so autoscaling stays.
    """
    sm = clients("sagemaker")
    current = sm.describe_endpoint(EndpointName=name)
    old_config_name = current["EndpointConfigName"]
    old_config = sm.describe_endpoint_config(EndpointConfigName=old_config_name)
    old_models = [v["ModelName"] for v in old_config["ProductionVariants"]]
    if endpoint_config:
        if model != ModelSpec() or capacity != CapacitySpec():
            raise RequestError(
                "--endpoint-config switches to an existing config: leave out the model and capacity options"
            )
        new_config_name, new_model = endpoint_config, None
    else:
        if len(old_config["ProductionVariants"]) != 1:
            raise RequestError(
                f"endpoint {name} has several variants: build its new config "
                "yourself and pass --endpoint-config"
            )
        new_config_name, new_model = _new_config(sm, name, old_config, model, capacity, log)
    sm.update_endpoint(EndpointName=name, EndpointConfigName=new_config_name)
    log(f"endpoint {name}: updating {old_config_name} -> {new_config_name}")
    described = _maybe_wait(sm, name, wait, log)
    status = described["EndpointStatus"]
    if status == "InService" and described["EndpointConfigName"] != new_config_name:
        reason = described.get("FailureReason", "see the endpoint's events in CloudWatch")
        raise WaitError(
            f"update of endpoint {name} failed and was rolled back to "
            f"{described['EndpointConfigName']}: {reason}"
        )
    result = {
        "endpoint": name,
        "endpoint_config": new_config_name,
        "previous_endpoint_config": old_config_name,
        "status": status,
    }
    if new_model:
        result["model"] = new_model
    if delete_old:
        if status != "InService":
            raise RequestError("--delete-old needs the update to finish: leave out --no-wait")
        sm.delete_endpoint_config(EndpointConfigName=old_config_name)
        log(f"endpoint config {old_config_name}: deleted")
        in_use = {
            v["ModelName"]
            for v in sm.describe_endpoint_config(EndpointConfigName=new_config_name)["ProductionVariants"]
        }
        for old_model in old_models:
            if old_model not in in_use:
                sm.delete_model(ModelName=old_model)
                log(f"model {old_model}: deleted")
    else:
        log(f"roll back with: python -m deploy update --name {name} --endpoint-config {old_config_name}")
    return result


def _new_config(sm, name, old_config, model: ModelSpec, capacity: CapacitySpec, log):
    old_variant = resources.variant_from_description(old_config["ProductionVariants"][0])
    model_name = old_variant["ModelName"]
    stamp_name = resources.stamped(name)
    if model != ModelSpec():
        described = sm.describe_model(ModelName=model_name)
        container = described["PrimaryContainer"]
        env = {**container.get("Environment", {}), **model.env}
        request = resources.model_request(
            stamp_name,
            model.image or container["Image"],
            model.role or described["ExecutionRoleArn"],
            model.model_data or container.get("ModelDataUrl"),
            env,
            model_in_image=True,
            multi_model=container.get("Mode") == "MultiModel",
        )
        sm.create_model(**request)
        log(f"model {stamp_name}: created")
        model_name = stamp_name
    serverless = old_variant.get("ServerlessConfig", {})
    to_instances = capacity.instance_type is not None or capacity.instance_count is not None
    to_serverless = capacity.serverless_memory is not None or capacity.serverless_concurrency is not None
    if to_serverless or (serverless and not to_instances):
        variant = resources.production_variant(
            model_name,
            serverless_memory=capacity.serverless_memory or serverless.get("MemorySizeInMB"),
            serverless_concurrency=capacity.serverless_concurrency or serverless.get("MaxConcurrency"),
            variant_name=old_variant["VariantName"],
        )
    else:
        variant = resources.production_variant(
            model_name,
            instance_type=capacity.instance_type or old_variant.get("InstanceType"),
            instance_count=capacity.instance_count or old_variant.get("InitialInstanceCount", 1),
            startup_timeout=capacity.startup_timeout
            or old_variant.get("ContainerStartupHealthCheckTimeoutInSeconds"),
            variant_name=old_variant["VariantName"],
            weight=old_variant.get("InitialVariantWeight", 1.0),
        )
    request = {"EndpointConfigName": stamp_name, "ProductionVariants": [variant]}
    if "AsyncInferenceConfig" in old_config:
        request["AsyncInferenceConfig"] = old_config["AsyncInferenceConfig"]
    sm.create_endpoint_config(**request)
    log(f"endpoint config {stamp_name}: created")
    return stamp_name, (model_name if model != ModelSpec() else None)


def delete(clients, name: str, *, keep_config: bool = False, keep_model: bool = False, log=print) -> dict:
    """Autoscaling registration, endpoint, its endpoint config and its models."""
    sm = clients("sagemaker")
    described = sm.describe_endpoint(EndpointName=name)
    config_name = described["EndpointConfigName"]
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    models = [v["ModelName"] for v in config["ProductionVariants"]]
    variants = [v["VariantName"] for v in config["ProductionVariants"]]
    deregistered = scaling.deregister(
        clients("application-autoscaling"),
        [f"endpoint/{name}/variant/{variant}" for variant in variants],
        log=log,
    )
    sm.delete_endpoint(EndpointName=name)
    log(f"endpoint {name}: deleted")
    result = {"endpoint": name, "autoscaling_deregistered": deregistered}
    if not keep_config:
        sm.delete_endpoint_config(EndpointConfigName=config_name)
        log(f"endpoint config {config_name}: deleted")
        result["endpoint_config"] = config_name
    if not keep_model:
        for model_name in models:
            sm.delete_model(ModelName=model_name)
            log(f"model {model_name}: deleted")
        result["models"] = models
    return result


def _maybe_wait(sm, name: str, wait: WaitSpec, log) -> dict:
    if not wait.wait:
        return sm.describe_endpoint(EndpointName=name)
    # A failed update rolls back (RollingBack, then InService on the old config): `update` checks that.
    return wait_until(sm, "endpoint_in_service", f"endpoint {name}", wait, log, EndpointName=name)
