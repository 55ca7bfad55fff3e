"""AWS Lambda handler of the pipeline's Deploy step: a registered model package -> a live endpoint.

Self-contained (only boto3, which the Lambda runtime provides). Input event, set by the LambdaStep::

    {"model_package_arn": "...", "endpoint_name": "detector", "instance_type": "ml.g5.xlarge",
     "instance_count": 1, "role_arn": "arn:aws:iam::...:role/..."}

Names of the model and endpoint config derive from the inputs, so a rerun with the same inputs
reuses what exists: the endpoint is created when missing, updated in place (no downtime) when it
runs another config, and left alone when it already runs this one. Packages that are not Approved
are not deployed. Returns ``{"EndpointName", "Action", ...}``; Action is created, updated,
unchanged or skipped. The function does not wait for the endpoint to be InService.
"""

from __future__ import annotations

import hashlib
import logging

import boto3
from botocore.exceptions import ClientError

logger = logging.getLogger()
logger.setLevel(logging.INFO)

REQUIRED = ("model_package_arn", "endpoint_name", "instance_type", "role_arn")
_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed")
MAX_NAME = 63


class DeployError(Exception):
    """The deployment cannot go ahead; the message says why and what to do."""


def handler(event, context=None, client=None):
    missing = [key for key in REQUIRED if not event.get(key)]
    if missing:
        raise DeployError(f"deploy event is missing {', '.join(missing)}; got keys {sorted(event)}")
    try:
        count = int(event.get("instance_count", 1))
    except (TypeError, ValueError):
        raise DeployError(f"instance_count {event.get('instance_count')!r}: expected a whole number") from None
    return deploy(
        client or boto3.client("sagemaker"),
        model_package_arn=event["model_package_arn"],
        endpoint_name=event["endpoint_name"],
        instance_type=event["instance_type"],
        instance_count=count,
        role_arn=event["role_arn"],
    )


def resource_name(endpoint_name: str, *parts: object) -> str:
    """``<endpoint>-<10 hex digits of the inputs>``, within SageMaker's 63-character limit."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:10]
    return f"{endpoint_name[: MAX_NAME - 11].rstrip('-')}-{digest}"


def deploy(client, model_package_arn: str, endpoint_name: str, instance_type: str, instance_count: int, role_arn: str) -> dict:
    package = client.describe_model_package(ModelPackageName=model_package_arn)
    status = package.get("ModelApprovalStatus")
    result = {"statusCode": 200, "EndpointName": endpoint_name, "ModelPackageArn": model_package_arn}
    if status != "Approved":
        reason = f"model package {model_package_arn} is {status}; approve it, then rerun the Deploy step"
        logger.info("Not deploying: %s", reason)
        return {**result, "Action": "skipped", "Reason": reason}

    name = resource_name(endpoint_name, model_package_arn, instance_type, instance_count, role_arn)
    _create_unless_exists(
        client.create_model, "model", ModelName=name, ExecutionRoleArn=role_arn, Containers=[{"ModelPackageName": model_package_arn}]
    )
    _create_unless_exists(
        client.create_endpoint_config,
        "endpoint configuration",
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": instance_count, "InstanceType": instance_type}
        ],
    )
    endpoint = _describe_endpoint(client, endpoint_name)
    if endpoint is None:
        client.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=name)
        action = "created"
    elif endpoint["EndpointConfigName"] == name:
        action = "unchanged"
    elif endpoint["EndpointStatus"] in _BUSY or endpoint["EndpointStatus"] == "Failed":
        hint = "delete it (it cannot be updated)" if endpoint["EndpointStatus"] == "Failed" else "wait until it is InService"
        raise DeployError(f"endpoint {endpoint_name} is {endpoint['EndpointStatus']}: {hint}, then rerun the Deploy step")
    else:
        client.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=name)
        action = "updated"
    logger.info("Endpoint %s %s with config %s (%s)", endpoint_name, action, name, model_package_arn)
    return {**result, "Action": action, "EndpointConfigName": name, "ModelName": name}


def _create_unless_exists(create, what: str, **request) -> None:
    try:
        create(**request)
    except ClientError as e:
        if "already exist" not in e.response.get("Error", {}).get("Message", ""):
            raise
        logger.info("Reusing the existing %s", what)


def _describe_endpoint(client, endpoint_name: str) -> dict | None:
    try:
        return client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "Could not find" in error.get("Message", ""):
            return None
        raise
