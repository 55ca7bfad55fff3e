"""AWS Lambda handler: a registered model package -> a live endpoint, and the champion lookup.

Self-contained (the ``pipeline`` modules it ships with and boto3, which the Lambda runtime provides).
It accepts three events:

* the pipeline's Deploy step: ``{"model_package_arn": "...", "endpoint_name": "detector", "instance_type":
  "ml.g5.xlarge", "role_arn": "...", ...}`` with the optional keys of :class:`DeploySettings`;
* EventBridge's ``SageMaker Model Package State Change`` event (a package approved later): the package
  comes from the event, every other setting from the function's ``DETECTOR_DEPLOY_SETTINGS`` (JSON),
  which ``python -m pipeline deploy-lambda`` sets;
* the pipeline's FindChampion step: ``{"action": "find_champion", "endpoint_name", "model_package_group",
  "fallback_model_data"}``.

Names of the model and endpoint config derive from the inputs, so a rerun with the same inputs reuses
what exists: the endpoint is created when missing, updated blue/green (traffic shifting, bake time,
rollback on the alarms this function puts) when it runs another config, and left alone when it already
runs this one. Packages that are not Approved are not deployed. Returns ``{"EndpointName", "Action",
...}``; Action is created, updated, unchanged, in-progress or skipped. The function does not wait for
the endpoint to be InService; autoscaling is registered once it is (any later run on the same config).
"""

from __future__ import annotations

import json
import logging
import os

import boto3
from botocore.exceptions import ClientError

from . import alarms, scaling
from .champion import find_champion
from .endpoint_config import (
    DeployError,
    DeploySettings,
    deployment_config,
    endpoint_config_request,
    mode_of,
    name_prefix,
    resource_name,
)

logger = logging.getLogger()
logger.setLevel(logging.INFO)

SETTINGS_VARIABLE = "DETECTOR_DEPLOY_SETTINGS"
REGISTERED_AS = "RegisteredAs"  # detector.pipeline_spec.REGISTERED_AS (the Lambda ships without the package)
EVENT_TYPE = "SageMaker Model Package State Change"
_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
KEEP = 3  # endpoint configurations (and their models) kept besides the one in service


class Clients:
    """The AWS clients the deployment uses; tests pass moto-backed or stubbed ones."""

    def __init__(self, sagemaker=None, cloudwatch=None, autoscaling=None):
        self.sagemaker = sagemaker or boto3.client("sagemaker")
        self._cloudwatch, self._autoscaling = cloudwatch, autoscaling

    @property
    def cloudwatch(self):
        self._cloudwatch = self._cloudwatch or boto3.client("cloudwatch")
        return self._cloudwatch

    @property
    def autoscaling(self):
        self._autoscaling = self._autoscaling or boto3.client("application-autoscaling")
        return self._autoscaling


def handler(event, context=None, client=None, clients: Clients | None = None, defaults: dict | None = None):
    clients = clients or Clients(sagemaker=client)
    if event.get("action") == "find_champion":
        for key in ("endpoint_name", "model_package_group"):
            if not event.get(key):
                raise DeployError(f"find_champion event is missing {key}; got keys {sorted(event)}")
        found = find_champion(clients.sagemaker, event["endpoint_name"], event["model_package_group"])
        found["ChampionModelData"] = found["ChampionModelData"] or event.get("fallback_model_data", "")
        logger.info("Champion: %s (%s)", found["ChampionArn"], found["ChampionSource"])
        return found
    if event.get("detail-type") == EVENT_TYPE:
        detail = event.get("detail", {})
        if defaults is None:
            text = os.environ.get(SETTINGS_VARIABLE, "")
            try:
                defaults = json.loads(text) if text else {}
            except json.JSONDecodeError as e:
                raise DeployError(f"{SETTINGS_VARIABLE} is not JSON ({e}); rerun `python -m pipeline deploy-lambda`") from None
        event = {**defaults, "model_package_arn": detail.get("ModelPackageArn", "")}
        if not event["model_package_arn"]:
            raise DeployError(f"{EVENT_TYPE} event without detail.ModelPackageArn; got detail keys {sorted(detail)}")
        return deploy(clients, event["model_package_arn"], DeploySettings.from_event(event), approval_event=True)
    if not event.get("model_package_arn"):
        raise DeployError(f"deploy event is missing model_package_arn; got keys {sorted(event)}")
    return deploy(clients, event["model_package_arn"], DeploySettings.from_event(event))


def deploy(clients: Clients, model_package_arn: str, settings: DeploySettings, approval_event: bool = False) -> dict:
    client = clients.sagemaker
    endpoint_name = settings.endpoint_name
    package = client.describe_model_package(ModelPackageName=model_package_arn)
    status = package.get("ModelApprovalStatus")
    result = {"statusCode": 200, "EndpointName": endpoint_name, "ModelPackageArn": model_package_arn, "EndpointMode": settings.endpoint_mode}
    if approval_event and (package.get("CustomerMetadataProperties") or {}).get(REGISTERED_AS) == "Approved":
        reason = (f"model package {model_package_arn} was registered Approved by a pipeline execution, whose Deploy step "
                  f"deploys it; to deploy it again run python -m pipeline deploy {model_package_arn}")
        logger.info("Not deploying: %s", reason)
        return {**result, "Action": "skipped", "Reason": reason}
    if status != "Approved":
        reason = (f"model package {model_package_arn} is {status}; approve it (python -m pipeline approve {model_package_arn}) "
                  "and it is deployed, or run python -m pipeline deploy with its ARN")
        logger.info("Not deploying: %s", reason)
        return {**result, "Action": "skipped", "Reason": reason}

    model_name = resource_name(endpoint_name, model_package_arn, settings.role_arn)
    config_name = resource_name(endpoint_name, model_package_arn, settings.config_fingerprint())
    endpoint = _describe_endpoint(client, endpoint_name)
    state = endpoint["EndpointStatus"] if endpoint else None
    if state in ("Failed", "OutOfService", "UpdateRollbackFailed"):
        raise DeployError(_broken_message(endpoint))
    if state in _BUSY:
        pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
        if config_name in (pending, endpoint["EndpointConfigName"]):
            return {**result, "Action": "in-progress", "EndpointConfigName": config_name, "ModelName": model_name,
                    "Reason": f"endpoint {endpoint_name} is {state} towards this configuration already"}
        raise DeployError(f"endpoint {endpoint_name} is {state}: wait until it is InService "
                          f"(aws sagemaker wait endpoint-in-service --endpoint-name {endpoint_name}), then rerun the deployment")
    current, current_mode = None, None
    if endpoint is not None and endpoint["EndpointConfigName"] != config_name:
        current = _describe_config(client, endpoint["EndpointConfigName"])
        current_mode = mode_of(current) if current else None
        if settings.endpoint_mode == "serverless" and current_mode not in (None, "serverless"):
            raise DeployError(
                f"endpoint {endpoint_name} is a {current_mode} endpoint and SageMaker cannot update an instance-based endpoint "
                f"to serverless: delete it (aws sagemaker delete-endpoint --endpoint-name {endpoint_name}) and rerun, "
                "or deploy the serverless endpoint under another EndpointName"
            )

    if not _exists(client.describe_model, ModelName=model_name):
        _create_unless_exists(client.create_model, "model", ModelName=model_name, ExecutionRoleArn=settings.role_arn,
                              Containers=[{"ModelPackageName": model_package_arn}])
    if not _exists(client.describe_endpoint_config, EndpointConfigName=config_name):
        _create_unless_exists(client.create_endpoint_config, "endpoint configuration",
                              **endpoint_config_request(settings, config_name, model_name))
    alarm_names = alarms.put_alarms(clients.cloudwatch, settings)
    result.update(EndpointConfigName=config_name, ModelName=model_name, Alarms=alarm_names)
    if endpoint is None:
        client.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
        action = "created"
    elif endpoint["EndpointConfigName"] == config_name:
        action = "unchanged"
    else:
        # Application Auto Scaling refuses an update that changes an autoscaled variant's instance type.
        instance_type = (current or {}).get("ProductionVariants", [{}])[0].get("InstanceType")
        if not settings.autoscaling or instance_type != settings.instance_type or current_mode != settings.endpoint_mode:
            if scaling.remove(clients.autoscaling, endpoint_name):
                result["AutoscalingRemoved"] = True
        deployment = deployment_config(settings, alarm_names)
        client.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name, DeploymentConfig=deployment)
        result["DeploymentConfig"] = deployment
        action = "updated"
    result["Action"] = action
    if settings.autoscaling:
        if action == "unchanged":
            result["Autoscaling"] = scaling.apply(clients.autoscaling, settings)
        elif action == "updated" and not result.get("AutoscalingRemoved") and scaling.is_registered(clients.autoscaling, endpoint_name):
            result["Autoscaling"] = "kept: the registered target and policy stay across the update (the next run on it refreshes them)"
        else:
            result["Autoscaling"] = "registered once the endpoint is InService: the next deployment run on this configuration does it"
    result["Deleted"] = cleanup(client, endpoint_name, keep={config_name, endpoint["EndpointConfigName"] if endpoint else config_name})
    logger.info("Endpoint %s %s with config %s (%s)", endpoint_name, action, config_name, model_package_arn)
    return result


def _broken_message(endpoint: dict) -> str:
    name, state = endpoint["EndpointName"], endpoint["EndpointStatus"]
    reason = f" ({endpoint['FailureReason']})" if endpoint.get("FailureReason") else ""
    if state == "Failed":
        what = "it cannot be updated: delete it (aws sagemaker delete-endpoint --endpoint-name {name}) and rerun the deployment"
    elif state == "OutOfService":
        what = "it takes no requests and cannot be updated until SageMaker brings it back; if it stays so, delete it and rerun"
    else:
        what = ("its last update failed and so did the rollback: look at the endpoint's events in the console, then delete it "
                "(aws sagemaker delete-endpoint --endpoint-name {name}) and rerun the deployment")
    return f"endpoint {name} is {state}{reason}: " + what.format(name=name)


def _describe_config(client, config_name: str) -> dict | None:
    try:
        return client.describe_endpoint_config(EndpointConfigName=config_name)
    except ClientError:
        return None  # deleted by hand: the update replaces it anyway


def cleanup(client, endpoint_name: str, keep: set[str]) -> list[str]:
    """Delete this function's older endpoint configs and models of ``endpoint_name``: the newest :data:`KEEP`
    and those in ``keep`` (the one in service and the new one) stay, and so do their models."""
    prefix = name_prefix(endpoint_name)

    def ours(name: str) -> bool:
        rest = name[len(prefix):]
        return name.startswith(prefix) and len(rest) == 10 and all(c in "0123456789abcdef" for c in rest)

    configs = [c for c in _all(client.list_endpoint_configs, "EndpointConfigs", NameContains=prefix) if ours(c["EndpointConfigName"])]
    configs.sort(key=lambda c: c["CreationTime"], reverse=True)
    kept = {c["EndpointConfigName"] for c in configs[:KEEP]} | keep
    deleted = []
    kept_models = set()
    for config in configs:
        name = config["EndpointConfigName"]
        if name in kept:
            try:
                described = client.describe_endpoint_config(EndpointConfigName=name)
                kept_models.update(v["ModelName"] for v in described["ProductionVariants"])
            except ClientError:
                pass
            continue
        client.delete_endpoint_config(EndpointConfigName=name)
        deleted.append(name)
    models = [m for m in _all(client.list_models, "Models", NameContains=prefix) if ours(m["ModelName"])]
    models.sort(key=lambda m: m["CreationTime"], reverse=True)
    for model in models[KEEP:]:
        if model["ModelName"] not in kept_models:
            client.delete_model(ModelName=model["ModelName"])
            deleted.append(model["ModelName"])
    return deleted


def _all(call, key: str, **request) -> list[dict]:
    items, token = [], None
    while True:
        page = call(**request, **({"NextToken": token} if token else {}))
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return items


def _exists(describe, **request) -> bool:
    try:
        describe(**request)
        return True
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "Could not find" in error.get("Message", ""):
            return False
        raise


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
