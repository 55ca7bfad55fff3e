"""Target-tracking autoscaling of an endpoint's variant on SageMakerVariantInvocationsPerInstance.
Part of the deploy Lambda's code."""

from __future__ import annotations

from .endpoint_config import VARIANT, DeploySettings

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def resource_id(endpoint_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{VARIANT}"


def policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations-per-instance"


def is_registered(autoscaling, endpoint_name: str) -> bool:
    targets = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[resource_id(endpoint_name)], ScalableDimension=DIMENSION
    )
    return bool(targets.get("ScalableTargets"))


def apply(autoscaling, settings: DeploySettings) -> dict:
    """Register (or re-register: it updates) the scalable target and put the target-tracking policy."""
    target = resource_id(settings.endpoint_name)
    autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE, ResourceId=target, ScalableDimension=DIMENSION,
        MinCapacity=settings.instance_count, MaxCapacity=settings.max_instance_count,
    )
    autoscaling.put_scaling_policy(
        PolicyName=policy_name(settings.endpoint_name), ServiceNamespace=NAMESPACE, ResourceId=target,
        ScalableDimension=DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": settings.invocations_per_instance,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 60,
        },
    )
    return {"ResourceId": target, "MinCapacity": settings.instance_count, "MaxCapacity": settings.max_instance_count,
            "TargetInvocationsPerInstance": settings.invocations_per_instance}


def remove(autoscaling, endpoint_name: str) -> bool:
    """Deregister the variant (its policies go with it); True when there was something to remove."""
    if not is_registered(autoscaling, endpoint_name):
        return False
    autoscaling.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=resource_id(endpoint_name), ScalableDimension=DIMENSION)
    return True
