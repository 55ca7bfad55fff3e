"""The pipeline's AWS control plane: upsert, start, status and the deploy Lambda, with plain boto3 clients."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from detector.pipeline_spec import Value

HANDLER_MODULE = Path(__file__).with_name("deploy_handler.py")
LAMBDA_RUNTIME = "python3.12"


def upsert_pipeline(client, name: str, definition: str, role_arn: str, description: str = "") -> tuple[str, str]:
    """Create the pipeline or update it in place; returns (action, pipeline ARN)."""
    request = {"PipelineName": name, "PipelineDefinition": definition, "RoleArn": role_arn}
    if description:
        request["PipelineDescription"] = description
    if _pipeline_exists(client, name):
        return "updated", client.update_pipeline(**request)["PipelineArn"]
    return "created", client.create_pipeline(**request, ClientRequestToken=str(uuid.uuid4()))["PipelineArn"]


def _pipeline_exists(client, name: str) -> bool:
    try:
        client.describe_pipeline(PipelineName=name)
        return True
    except ClientError as e:
        error = e.response.get("Error", {})
        # SageMaker answers ResourceNotFound; some emulators a ValidationException.
        if error.get("Code") == "ResourceNotFound" or "Could not find pipeline" in error.get("Message", ""):
            return False
        raise


def ensure_model_package_group(client, name: str) -> bool:
    """Create the group the Register step writes to, unless it exists; True when created."""
    try:
        client.describe_model_package_group(ModelPackageGroupName=name)
        return False
    except ClientError as e:
        error = e.response.get("Error", {})
        if error.get("Code") not in ("ValidationException", "ResourceNotFound") or "does not exist" not in error.get("Message", ""):
            raise
    client.create_model_package_group(
        ModelPackageGroupName=name, ModelPackageGroupDescription="Detectron2 detectors registered by the detector pipeline"
    )
    return True


def start_execution(client, name: str, overrides: dict[str, Value], display_name: str | None = None) -> str:
    request = {
        "PipelineName": name,
        "PipelineParameters": [{"Name": k, "Value": str(v)} for k, v in overrides.items()],
        "ClientRequestToken": str(uuid.uuid4()),
    }
    if display_name:
        request["PipelineExecutionDisplayName"] = display_name
    return client.start_pipeline_execution(**request)["PipelineExecutionArn"]


@dataclass(frozen=True)
class StepState:
    name: str
    status: str
    detail: str  # failure reason, or what the step produced


def latest_execution(client, name: str) -> str:
    summaries = client.list_pipeline_executions(PipelineName=name, SortBy="CreationTime", SortOrder="Descending", MaxResults=1)
    executions = summaries.get("PipelineExecutionSummaries", [])
    if not executions:
        raise LookupError(f"pipeline {name} has no executions yet; start one with `python -m pipeline start`")
    return executions[0]["PipelineExecutionArn"]


def execution_status(client, execution_arn: str) -> tuple[dict, list[StepState]]:
    """The execution's description and its steps in the order they started."""
    execution = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    steps: list[dict] = []
    request = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
    while True:
        page = client.list_pipeline_execution_steps(**request)
        steps.extend(page.get("PipelineExecutionSteps", []))
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]
    return execution, [StepState(s["StepName"], s.get("StepStatus", "?"), _step_detail(s)) for s in steps]


def _step_detail(step: dict) -> str:
    if step.get("FailureReason"):
        return step["FailureReason"]
    metadata = step.get("Metadata", {})
    for key, field in (("TrainingJob", "Arn"), ("ProcessingJob", "Arn"), ("RegisterModel", "Arn")):
        if key in metadata:
            return metadata[key][field]
    if "Condition" in metadata:
        return f"outcome {metadata['Condition'].get('Outcome', '?')}"
    if "Lambda" in metadata:
        outputs = metadata["Lambda"].get("OutputParameters", [])
        return ", ".join(f"{o['Name']}={o['Value']}" for o in outputs) or metadata["Lambda"].get("Arn", "")
    if "Fail" in metadata:
        return metadata["Fail"].get("ErrorMessage", "")
    return ""


def handler_zip() -> bytes:
    """The deploy Lambda's code: the handler module alone, at the archive root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(HANDLER_MODULE.name, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        archive.writestr(info, HANDLER_MODULE.read_bytes())
    return buffer.getvalue()


def upsert_deploy_lambda(client, function_name: str, role_arn: str, timeout_s: int = 120) -> tuple[str, str]:
    """Create the deploy function or update its code and settings; returns (action, function ARN)."""
    settings = {
        "Role": role_arn,
        "Handler": f"{HANDLER_MODULE.stem}.handler",
        "Runtime": LAMBDA_RUNTIME,
        "Timeout": timeout_s,
        "MemorySize": 256,
        "Description": "Deploys a registered detector model package to a SageMaker endpoint",
    }
    try:
        client.get_function(FunctionName=function_name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        created = client.create_function(FunctionName=function_name, Code={"ZipFile": handler_zip()}, Publish=True, **settings)
        return "created", created["FunctionArn"]
    updated = client.update_function_code(FunctionName=function_name, ZipFile=handler_zip(), Publish=False)
    _wait_for_update(client, function_name)
    client.update_function_configuration(FunctionName=function_name, **settings)
    return "updated", updated["FunctionArn"]


def _wait_for_update(client, function_name: str, timeout_s: float = 60) -> None:
    # A function accepts no configuration change while its code update is in progress.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_function_configuration(FunctionName=function_name).get("LastUpdateStatus", "Successful")
        if status != "InProgress":
            return
        time.sleep(1)
