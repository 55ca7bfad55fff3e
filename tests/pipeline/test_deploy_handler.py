"""The deploy Lambda handler: create path against moto, update path with botocore's Stubber."""

import ast
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from pipeline import deploy_handler
from pipeline.deploy_handler import DeployError, handler
from aws_mock import aws  # noqa: F401  (fixture)

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/DetectorSageMaker"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/detector/4"


def register(client, status: str = "Approved") -> str:
    client.create_model_package_group(ModelPackageGroupName="detector")
    return client.create_model_package(
        ModelPackageGroupName="detector",
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/detector-serve:1", "ModelDataUrl": "s3://b/model.tar.gz"}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def event(package: str, **overrides) -> dict:
    return {"model_package_arn": package, "endpoint_name": "detector", "instance_type": "ml.m5.large",
            "instance_count": 1, "role_arn": ROLE, **overrides}


def test_creates_model_config_and_endpoint(aws):
    package = register(aws)
    result = handler(event(package))
    assert result["Action"] == "created" and result["EndpointName"] == "detector"
    endpoint = aws.describe_endpoint(EndpointName="detector")
    assert endpoint["EndpointConfigName"] == result["EndpointConfigName"]
    config = aws.describe_endpoint_config(EndpointConfigName=result["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (result["ModelName"], "ml.m5.large", 1)
    model = aws.describe_model(ModelName=result["ModelName"])
    assert model["Containers"][0]["ModelPackageName"] == package
    assert model["ExecutionRoleArn"] == ROLE


def test_rerun_with_the_same_inputs_changes_nothing(aws):
    package = register(aws)
    first = handler(event(package))
    again = handler(event(package))
    assert again["Action"] == "unchanged"
    assert again["EndpointConfigName"] == first["EndpointConfigName"]
    assert len(aws.list_endpoint_configs()["EndpointConfigs"]) == 1


def test_package_not_approved_is_not_deployed(aws):
    package = register(aws, status="PendingManualApproval")
    result = handler(event(package))
    assert result["Action"] == "skipped"
    assert "is PendingManualApproval; approve it, then rerun the Deploy step" in result["Reason"]
    assert aws.list_endpoints()["Endpoints"] == []


@pytest.mark.parametrize("broken, message", [({"role_arn": ""}, "missing role_arn"), ({"instance_count": "two"}, "expected a whole number")])
def test_bad_event_is_refused(broken, message):
    with pytest.raises(DeployError, match=message):
        handler(event(PACKAGE, **broken), client=object())


APPROVED_PACKAGE = {
    "ModelPackageName": "detector", "ModelPackageArn": PACKAGE, "ModelApprovalStatus": "Approved", "CreationTime": "2026-01-01",
    "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []},
}


def stubbed_client():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def test_updates_a_running_endpoint_in_place():
    client, stub = stubbed_client()
    name = deploy_handler.resource_name("detector", PACKAGE, "ml.g5.xlarge", 2, ROLE)
    stub.add_response("describe_model_package", APPROVED_PACKAGE, {"ModelPackageName": PACKAGE})
    # A previous, interrupted run already created the model: it is reused.
    stub.add_client_error("create_model", "ValidationException", f'Cannot create already existing model "arn:aws:sagemaker:us-east-1:123456789012:model/{name}".')
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{name}"}, {
        "EndpointConfigName": name,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 2, "InstanceType": "ml.g5.xlarge"}],
    })
    stub.add_response("describe_endpoint", {
        "EndpointName": "detector", "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/detector",
        "EndpointConfigName": "detector-0123456789", "EndpointStatus": "InService", "CreationTime": "2026-01-01", "LastModifiedTime": "2026-01-01",
    }, {"EndpointName": "detector"})
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/detector"},
                      {"EndpointName": "detector", "EndpointConfigName": name})
    with stub:
        result = handler(event(PACKAGE, instance_type="ml.g5.xlarge", instance_count="2"), client=client)
    stub.assert_no_pending_responses()
    assert result["Action"] == "updated" and result["EndpointConfigName"] == name


def test_endpoint_in_the_middle_of_a_change_is_reported():
    client, stub = stubbed_client()
    stub.add_response("describe_model_package", APPROVED_PACKAGE)
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"})
    stub.add_response("describe_endpoint", {
        "EndpointName": "detector", "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/detector",
        "EndpointConfigName": "detector-0123456789", "EndpointStatus": "Updating", "CreationTime": "2026-01-01", "LastModifiedTime": "2026-01-01",
    })
    with stub, pytest.raises(DeployError, match="endpoint detector is Updating: wait until it is InService, then rerun the Deploy step"):
        handler(event(PACKAGE), client=client)


def test_other_aws_errors_are_not_swallowed():
    client, stub = stubbed_client()
    stub.add_client_error("describe_model_package", "AccessDeniedException", "not authorized to perform sagemaker:DescribeModelPackage")
    with stub, pytest.raises(ClientError, match="AccessDenied"):
        handler(event(PACKAGE), client=client)


def test_names_fit_sagemaker_limits_and_depend_on_the_inputs():
    long = deploy_handler.resource_name("e" * 80, PACKAGE, "ml.g5.xlarge", 1, ROLE)
    assert len(long) <= 63
    assert deploy_handler.resource_name("detector", PACKAGE, "ml.g5.xlarge", 1, ROLE) != deploy_handler.resource_name("detector", PACKAGE, "ml.g5.2xlarge", 1, ROLE)


def test_handler_module_needs_only_what_the_lambda_runtime_has():
    tree = ast.parse(Path(deploy_handler.__file__).read_text())
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module).split(".")[0]
        for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {"__future__", "hashlib", "logging", "boto3", "botocore"}
