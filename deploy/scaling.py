"""Target-tracking autoscaling of an endpoint variant on SageMakerVariantInvocationsPerInstance."""

from __future__ import annotations

from deploy import resources
from deploy.resources import RequestError


def autoscale(
    clients,
    name: str,
    *,
    variant: str | None,
    min_capacity: int,
    max_capacity: int,
    target: float,
    scale_in_cooldown: int = 300,
    scale_out_cooldown: int = 60,
    log=print,
) -> dict:
    live = clients("sagemaker").describe_endpoint(EndpointName=name).get("ProductionVariants", [])
    names = [v["VariantName"] for v in live]
    variant = variant or (names[0] if names else resources.VARIANT_NAME)
    if names and variant not in names:
        raise RequestError(f"--variant {variant!r}: endpoint {name} has {', '.join(names)}")
    if any(v["VariantName"] == variant and "CurrentServerlessConfig" in v for v in live):
        raise RequestError(
            f"endpoint {name} is serverless: it scales by --serverless-concurrency, "
            "not by instance autoscaling"
        )
    register, policy = resources.scaling_requests(
        name,
        variant,
        min_capacity=min_capacity,
        max_capacity=max_capacity,
        target=target,
        scale_in_cooldown=scale_in_cooldown,
        scale_out_cooldown=scale_out_cooldown,
    )
    aas = clients("application-autoscaling")
    aas.register_scalable_target(**register)
    log(f"autoscaling {register['ResourceId']}: {min_capacity}..{max_capacity} instances")
    response = aas.put_scaling_policy(**policy)
    log(f"policy {policy['PolicyName']}: target {target:g} invocations per instance per minute")
    return {
        "resource_id": register["ResourceId"],
        "policy": policy["PolicyName"],
        "policy_arn": response.get("PolicyARN"),
        "min": min_capacity,
        "max": max_capacity,
        "target": float(target),
    }


def deregister(aas, resource_ids: list[str], log=print) -> list[str]:
    """Delete the policies of these variants, then their scalable targets; returns those removed.

    AWS drops the policies with the target, but deleting them first states it and does not
    depend on that.
    """
    dimension = "sagemaker:variant:DesiredInstanceCount"
    found = aas.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=resource_ids, ScalableDimension=dimension
    )
    removed = []
    for target in found.get("ScalableTargets", []):
        resource_id = target["ResourceId"]
        policies = aas.describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=dimension
        )
        for policy in policies.get("ScalingPolicies", []):
            aas.delete_scaling_policy(
                PolicyName=policy["PolicyName"],
                ServiceNamespace="sagemaker",
                ResourceId=resource_id,
                ScalableDimension=dimension,
            )
            log(f"policy {policy['PolicyName']}: deleted")
        aas.deregister_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=dimension
        )
        log(f"autoscaling {resource_id}: deregistered")
        removed.append(resource_id)
    return removed


def remove_autoscaling(clients, name: str, *, variant: str | None, log=print) -> dict:
    variant = variant or resources.VARIANT_NAME
    resource_id = f"endpoint/{name}/variant/{variant}"
    removed = deregister(clients("application-autoscaling"), [resource_id], log=log)
    if not removed:
        raise RequestError(f"{resource_id} has no autoscaling to remove")
    return {"resource_id": resource_id, "deregistered": True}
