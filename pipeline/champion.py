"""Which model is the champion a new model must not fall behind: the package the endpoint serves now,
else the newest Approved package of the group, else none. Part of the deploy Lambda's code (the
pipeline's FindChampion step invokes it with ``{"action": "find_champion", ...}``)."""

from __future__ import annotations

from botocore.exceptions import ClientError

NONE = "none"


def find_champion(client, endpoint_name: str, group: str) -> dict:
    """``{"ChampionArn", "ChampionModelData", "ChampionSource"}``; ARN ``none`` when there is no champion."""
    package = _served_package(client, endpoint_name)
    source = f"served by endpoint {endpoint_name}"
    if package is None:
        listed = client.list_model_packages(
            ModelPackageGroupName=group, ModelApprovalStatus="Approved", SortBy="CreationTime", SortOrder="Descending", MaxResults=1,
        ).get("ModelPackageSummaryList", [])
        package = listed[0]["ModelPackageArn"] if listed else None
        source = f"newest Approved package of group {group}"
    if package is None:
        return {"ChampionArn": NONE, "ChampionModelData": "", "ChampionSource": f"no endpoint {endpoint_name} and no Approved package in {group}"}
    described = client.describe_model_package(ModelPackageName=package)
    containers = described.get("InferenceSpecification", {}).get("Containers", [])
    model_data = containers[0].get("ModelDataUrl", "") if containers else ""
    if not model_data:
        return {"ChampionArn": NONE, "ChampionModelData": "", "ChampionSource": f"{package} ({source}) has no ModelDataUrl"}
    return {"ChampionArn": described["ModelPackageArn"], "ChampionModelData": model_data, "ChampionSource": source}


def _served_package(client, endpoint_name: str) -> str | None:
    try:
        endpoint = client.describe_endpoint(EndpointName=endpoint_name)
        config = client.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        model = client.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None  # no endpoint yet, or its config or model was deleted
        raise
    containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
    return containers[0].get("ModelPackageName") or None
