"""The pipeline's AWS control plane: upsert, start, status and the deploy Lambda, with plain boto3 clients."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from detector.pipeline_spec import Value

PACKAGE_DIR = Path(__file__).parent
# The deploy Lambda's code: these modules of this package, and nothing else (boto3 is in the runtime).
LAMBDA_MODULES = ("__init__.py", "deploy_handler.py", "endpoint_config.py", "alarms.py", "scaling.py", "champion.py")
LAMBDA_HANDLER = "pipeline.deploy_handler.handler"
LAMBDA_RUNTIME = "python3.12"
SETTINGS_VARIABLE = "DETECTOR_DEPLOY_SETTINGS"  # deploy_handler.SETTINGS_VARIABLE


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
    return execution, [StepState(s["StepName"], s.get("StepStatus", "?"), _step_detail(s, client)) for s in steps]


def _exit_message(client, step: dict) -> str:
    """What a processing container wrote to /opt/ml/output/message (``ExitMessage``), if anything."""
    arn = step.get("Metadata", {}).get("ProcessingJob", {}).get("Arn")
    if not arn:
        return ""
    try:
        job = client.describe_processing_job(ProcessingJobName=arn.rsplit("/", 1)[-1])
    except ClientError:
        return ""
    return (job.get("ExitMessage") or "").strip()


def _step_detail(step: dict, client=None) -> str:
    exit_message = _exit_message(client, step) if client is not None and step.get("StepStatus") == "Failed" else ""
    if step.get("FailureReason"):
        reason = step["FailureReason"]
        return f"{reason} | exit message: {exit_message}" if exit_message and exit_message not in reason else reason
    if exit_message:
        return f"exit message: {exit_message}"
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
    """The deploy Lambda's code: the ``pipeline`` modules it needs, as the package ``pipeline/``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in LAMBDA_MODULES:
            info = zipfile.ZipInfo(f"pipeline/{name}", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, (PACKAGE_DIR / name).read_bytes())
    return buffer.getvalue()


def upsert_deploy_lambda(client, function_name: str, role_arn: str, timeout_s: int = 120, deploy_settings: dict | None = None) -> tuple[str, str]:
    """Create the deploy function or update its code and settings, then publish a version; returns
    (action, the published version's ARN), the ARN the pipeline and the EventBridge rule invoke."""
    settings = {
        "Role": role_arn,
        "Handler": LAMBDA_HANDLER,
        "Runtime": LAMBDA_RUNTIME,
        "Timeout": timeout_s,
        "MemorySize": 256,
        "Description": "Deploys a registered detector model package to a SageMaker endpoint",
        "Environment": {"Variables": {SETTINGS_VARIABLE: json.dumps(deploy_settings or {}, sort_keys=True)}},
    }
    try:
        client.get_function(FunctionName=function_name)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        client.create_function(FunctionName=function_name, Code={"ZipFile": handler_zip()}, Publish=False, **settings)
        action = "created"
    else:
        client.update_function_code(FunctionName=function_name, ZipFile=handler_zip(), Publish=False)
        _wait_for_update(client, function_name)
        client.update_function_configuration(FunctionName=function_name, **settings)
        action = "updated"
    _wait_for_update(client, function_name)
    published = client.publish_version(FunctionName=function_name)
    return action, published["FunctionArn"]  # qualified: ...:function:<name>:<version>


def _wait_for_update(client, function_name: str, timeout_s: float = 60) -> None:
    # A function accepts no configuration change (nor a publish) while an update is in progress.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        configuration = client.get_function_configuration(FunctionName=function_name)
        if configuration.get("LastUpdateStatus", "Successful") != "InProgress" and configuration.get("State", "Active") != "Pending":
            return
        time.sleep(1)


def approval_rule_name(function_name: str) -> str:
    return f"{function_name}-on-approval"


def upsert_approval_rule(events, lambda_client, function_arn: str, group: str) -> str:
    """An EventBridge rule on the group's "Model Package State Change" events to Approved that invokes
    ``function_arn`` (a published version), and the permission that lets it; returns the rule ARN."""
    function_name = function_arn.split(":")[6]
    rule = approval_rule_name(function_name)
    pattern = {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Approved"]},
    }
    rule_arn = events.put_rule(
        Name=rule, EventPattern=json.dumps(pattern), State="ENABLED",
        Description=f"Deploy model packages of group {group} when they are approved",
    )["RuleArn"]
    events.put_targets(Rule=rule, Targets=[{"Id": "deploy", "Arn": function_arn}])
    statement = f"{rule}-invoke"
    try:
        lambda_client.remove_permission(FunctionName=function_arn, StatementId=statement)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    lambda_client.add_permission(
        FunctionName=function_arn, StatementId=statement, Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com", SourceArn=rule_arn,
    )
    return rule_arn


def approve_package(client, package_arn: str, description: str = "") -> str:
    """Set a model package to Approved (the approval rule then deploys it); returns its previous status."""
    before = client.describe_model_package(ModelPackageName=package_arn).get("ModelApprovalStatus", "?")
    request = {"ModelPackageArn": package_arn, "ModelApprovalStatus": "Approved"}
    if description:
        request["ApprovalDescription"] = description
    client.update_model_package(**request)
    return before
