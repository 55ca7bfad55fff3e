"""The deploy Lambda against moto (botocore validates every request): each endpoint mode, blue/green
updates with alarms, autoscaling, data capture, every endpoint state, cleanup, the EventBridge event
and the champion lookup."""

import ast
import json
import subprocess
import sys
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from pipeline import control, deploy_handler
from pipeline.deploy_handler import Clients, handler
from pipeline.endpoint_config import DeployError, DeploySettings
from aws_mock import DEPLOYMENTS, age, aws, set_endpoint_status  # noqa: F401  (fixture)

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/DetectorSageMaker"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/detector/4"
BUCKET = "s3://detector-test-bucket/detector"


def register(client, status: str = "Approved", model_data: str = "s3://b/model.tar.gz") -> str:
    try:
        client.create_model_package_group(ModelPackageGroupName="detector")
    except ClientError:
        pass
    return client.create_model_package(
        ModelPackageGroupName="detector",
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/detector-serve:1", "ModelDataUrl": model_data}],
            "SupportedContentTypes": ["image/jpeg"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def event(package: str, **overrides) -> dict:
    return {"model_package_arn": package, "endpoint_name": "detector", "instance_type": "ml.m5.large",
            "instance_count": 1, "role_arn": ROLE, **overrides}


def clients(aws) -> Clients:
    return Clients(aws, boto3.client("cloudwatch", region_name=REGION), boto3.client("application-autoscaling", region_name=REGION))


def deploy(aws, package, **overrides) -> dict:
    return handler(event(package, **overrides), clients=clients(aws))


def config_of(aws, name="detector") -> dict:
    return aws.describe_endpoint_config(EndpointConfigName=aws.describe_endpoint(EndpointName=name)["EndpointConfigName"])


def test_creates_model_config_and_endpoint(aws):
    package = register(aws)
    result = deploy(aws, package)
    assert result["Action"] == "created" and result["EndpointName"] == "detector"
    endpoint = aws.describe_endpoint(EndpointName="detector")
    assert endpoint["EndpointConfigName"] == result["EndpointConfigName"]
    [variant] = config_of(aws)["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (result["ModelName"], "ml.m5.large", 1)
    model = aws.describe_model(ModelName=result["ModelName"])
    assert model["Containers"][0]["ModelPackageName"] == package
    assert model["ExecutionRoleArn"] == ROLE
    assert not config_of(aws).get("DataCaptureConfig") and not config_of(aws).get("AsyncInferenceConfig")


def test_rerun_with_the_same_inputs_changes_nothing(aws):
    package = register(aws)
    first = deploy(aws, package)
    again = deploy(aws, package)
    assert again["Action"] == "unchanged"
    assert again["EndpointConfigName"] == first["EndpointConfigName"]
    assert len(aws.list_endpoint_configs()["EndpointConfigs"]) == 1
    assert DEPLOYMENTS == {}


def test_package_not_approved_is_not_deployed(aws):
    package = register(aws, status="PendingManualApproval")
    result = deploy(aws, package)
    assert result["Action"] == "skipped"
    assert f"is PendingManualApproval; approve it (python -m pipeline approve {package})" in result["Reason"]
    assert aws.list_endpoints()["Endpoints"] == []


@pytest.mark.parametrize("broken, message", [
    ({"role_arn": ""}, "missing role_arn"),
    ({"instance_count": "two"}, "instance_count 'two': expected a whole number"),
    ({"endpoint_mode": "batch"}, "endpoint_mode 'batch': expected one of realtime, async, serverless"),
    ({"traffic_routing": "BLUE"}, "traffic_routing 'BLUE': expected one of ALL_AT_ONCE, CANARY, LINEAR"),
    ({"instance_count": 3, "max_instance_count": 2}, "instance counts 3..2: expected 1 <= minimum <= maximum"),
    ({"endpoint_mode": "async"}, "async_output_s3 '': expected an s3:// prefix for an async endpoint"),
    ({"endpoint_mode": "serverless", "serverless_memory_mb": 1000}, "serverless_memory_mb 1000: expected one of 1024"),
    ({"endpoint_mode": "serverless", "data_capture_percent": 5, "data_capture_s3": "s3://b/c"}, "data capture is not available on serverless"),
    ({"data_capture_percent": 5}, "data_capture_s3 '': expected an s3:// prefix when data capture is on"),
])
def test_bad_event_is_refused(broken, message):
    with pytest.raises(DeployError, match=message.replace("(", r"\(").replace(".", r"\.")):
        handler(event(PACKAGE, **broken), client=object())


def test_update_is_blue_green_with_rollback_alarms(aws):
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    first = deploy(aws, register(aws))
    second = register(aws, model_data="s3://b/model-2.tar.gz")
    result = deploy(aws, second, traffic_routing="CANARY", traffic_percent="20", bake_time_s="600", latency_alarm_ms="1500")
    assert result["Action"] == "updated" and result["EndpointConfigName"] != first["EndpointConfigName"]
    assert aws.describe_endpoint(EndpointName="detector")["EndpointConfigName"] == result["EndpointConfigName"]
    [update] = DEPLOYMENTS["detector"]
    policy = update["DeploymentConfig"]
    assert policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}
    assert policy["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "detector-invocation-5xx"}, {"AlarmName": "detector-model-latency"}]}
    assert result["DeploymentConfig"] == policy
    found = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert set(found) == {"detector-invocation-5xx", "detector-model-latency"}
    latency = found["detector-model-latency"]
    assert (latency["MetricName"], latency["Namespace"], latency["Threshold"]) == ("ModelLatency", "AWS/SageMaker", 1_500_000.0)
    assert {d["Name"]: d["Value"] for d in latency["Dimensions"]} == {"EndpointName": "detector", "VariantName": "AllTraffic"}
    assert found["detector-invocation-5xx"]["MetricName"] == "Invocation5XXErrors"


def test_linear_and_all_at_once_traffic(aws):
    deploy(aws, register(aws))
    deploy(aws, register(aws, model_data="s3://b/2.tar.gz"), traffic_routing="LINEAR", traffic_percent=25, bake_time_s=60)
    deploy(aws, register(aws, model_data="s3://b/3.tar.gz"))
    linear, at_once = (d["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] for d in DEPLOYMENTS["detector"])
    assert linear == {"Type": "LINEAR", "WaitIntervalInSeconds": 60, "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25}}
    assert at_once == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300}


def test_autoscaling_is_registered_once_in_service_and_kept_across_updates(aws):
    autoscaling = boto3.client("application-autoscaling", region_name=REGION)
    package = register(aws)
    scaled = {"instance_count": 2, "max_instance_count": 6, "invocations_per_instance": 70}
    created = deploy(aws, package, **scaled)
    assert created["Action"] == "created" and "once the endpoint is InService" in created["Autoscaling"]
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    again = deploy(aws, package, **scaled)  # InService now (moto creates endpoints InService)
    assert again["Action"] == "unchanged"
    [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == ("endpoint/detector/variant/AllTraffic", 2, 6)
    [policy] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and tracking["TargetValue"] == 70
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert config_of(aws)["ProductionVariants"][0]["InitialInstanceCount"] == 2

    updated = deploy(aws, register(aws, model_data="s3://b/2.tar.gz"), **scaled)
    assert updated["Action"] == "updated" and "AutoscalingRemoved" not in updated
    assert updated["Autoscaling"].startswith("kept")
    assert len(autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]) == 1

    # Another instance type: Application Auto Scaling would refuse the update, so the target goes first.
    retyped = deploy(aws, register(aws, model_data="s3://b/3.tar.gz"), instance_type="ml.c5.xlarge", **scaled)
    assert retyped["Action"] == "updated" and retyped["AutoscalingRemoved"] is True
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_data_capture_samples_to_the_bucket(aws):
    deploy(aws, register(aws), data_capture_percent="25", data_capture_s3=f"{BUCKET}/data-capture")
    assert config_of(aws)["DataCaptureConfig"] == {
        "EnableCapture": True, "InitialSamplingPercentage": 25, "DestinationS3Uri": f"{BUCKET}/data-capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }


ASYNC = {"endpoint_mode": "async", "async_output_s3": f"{BUCKET}/async/output", "async_failure_s3": f"{BUCKET}/async/failures",
         "async_max_concurrent": "2"}
SERVERLESS = {"endpoint_mode": "serverless", "serverless_memory_mb": "4096", "serverless_max_concurrency": "3"}


def test_async_endpoint(aws):
    package = register(aws)
    topic = "arn:aws:sns:us-east-1:123456789012:detector-done"
    result = deploy(aws, package, **ASYNC, async_success_topic=topic, async_error_topic="none")
    assert result["Action"] == "created" and result["EndpointMode"] == "async"
    assert config_of(aws)["AsyncInferenceConfig"] == {
        "OutputConfig": {"S3OutputPath": f"{BUCKET}/async/output", "S3FailurePath": f"{BUCKET}/async/failures",
                         "NotificationConfig": {"SuccessTopic": topic}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }
    assert deploy(aws, package, **ASYNC, async_success_topic=topic)["Action"] == "unchanged"


def test_serverless_endpoint(aws):
    package = register(aws)
    assert deploy(aws, package, **SERVERLESS)["Action"] == "created"
    [variant] = config_of(aws)["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 3}
    assert "InstanceType" not in variant
    assert deploy(aws, package, **SERVERLESS)["Action"] == "unchanged"


def test_switching_modes(aws):
    package = register(aws)
    deploy(aws, package, **SERVERLESS)
    to_realtime = deploy(aws, package)  # serverless -> instances: an update
    assert to_realtime["Action"] == "updated" and not config_of(aws)["ProductionVariants"][0].get("ServerlessConfig")
    to_async = deploy(aws, package, **ASYNC)
    assert to_async["Action"] == "updated" and config_of(aws)["AsyncInferenceConfig"]
    back = deploy(aws, package)
    assert back["Action"] == "updated" and not config_of(aws).get("AsyncInferenceConfig")
    with pytest.raises(DeployError, match="is a realtime endpoint and SageMaker cannot update an instance-based endpoint to serverless: "
                                          "delete it \\(aws sagemaker delete-endpoint --endpoint-name detector\\)"):
        deploy(aws, package, **SERVERLESS)
    assert not config_of(aws)["ProductionVariants"][0].get("ServerlessConfig")


@pytest.mark.parametrize("state, message", [
    ("Failed", "endpoint detector is Failed (image not found): it cannot be updated: delete it"),
    ("OutOfService", "endpoint detector is OutOfService: it takes no requests"),
    ("UpdateRollbackFailed", "endpoint detector is UpdateRollbackFailed: its last update failed and so did the rollback"),
])
def test_broken_endpoint_is_an_error_even_with_this_configuration(aws, state, message):
    package = register(aws)
    deploy(aws, package)
    set_endpoint_status("detector", state, "image not found" if state == "Failed" else None)
    pattern = message.replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(DeployError, match=pattern):
        deploy(aws, package)
    with pytest.raises(DeployError, match=pattern):
        deploy(aws, register(aws, model_data="s3://b/other.tar.gz"))
    assert DEPLOYMENTS == {}


def test_busy_endpoint(aws):
    package = register(aws)
    deploy(aws, package)
    set_endpoint_status("detector", "Creating")
    assert deploy(aws, package)["Action"] == "in-progress"  # already on its way to this configuration
    set_endpoint_status("detector", "Updating")
    with pytest.raises(DeployError, match="endpoint detector is Updating: wait until it is InService"):
        deploy(aws, register(aws, model_data="s3://b/other.tar.gz"))
    assert DEPLOYMENTS == {}


def test_cleanup_keeps_the_newest_and_never_the_one_in_service(aws):
    packages = [register(aws, model_data=f"s3://b/{i}.tar.gz") for i in range(6)]
    served = deploy(aws, packages[0])
    set_endpoint_status("detector", "InService")
    # Configurations made for the endpoint but never put in service (e.g. their update was refused).
    for package in packages[1:]:
        settings = DeploySettings.from_event(event(package))
        name = deploy_handler.resource_name("detector", package, settings.config_fingerprint())
        model = deploy_handler.resource_name("detector", package, ROLE)
        aws.create_model(ModelName=model, ExecutionRoleArn=ROLE, Containers=[{"ModelPackageName": package}])
        aws.create_endpoint_config(**deploy_handler.endpoint_config_request(settings, name, model))
    aws.create_endpoint_config(EndpointConfigName="detector-by-hand", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": served["ModelName"], "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    age("endpoint_configs", served["EndpointConfigName"], 30)  # the oldest of all, and in service
    age("_models", served["ModelName"], 30)
    for i, config in enumerate(aws.list_endpoint_configs()["EndpointConfigs"]):
        if config["EndpointConfigName"] != served["EndpointConfigName"]:
            age("endpoint_configs", config["EndpointConfigName"], i)
    result = deploy(aws, packages[0])  # unchanged: the one in service stays
    names = {c["EndpointConfigName"] for c in aws.list_endpoint_configs()["EndpointConfigs"]}
    assert served["EndpointConfigName"] in names and "detector-by-hand" in names
    # The newest KEEP stay, and the one in service whatever its age (moto's creation times may tie).
    assert len(names - {"detector-by-hand"}) == deploy_handler.KEEP + 1
    assert sum(1 for n in result["Deleted"] if aws_has_no(aws, n)) == len(result["Deleted"]) >= 2
    models = {m["ModelName"] for m in aws.list_models()["Models"]}
    assert served["ModelName"] in models
    for config in aws.list_endpoint_configs()["EndpointConfigs"]:
        for variant in aws.describe_endpoint_config(EndpointConfigName=config["EndpointConfigName"])["ProductionVariants"]:
            assert variant["ModelName"] in models


def aws_has_no(aws, name) -> bool:
    try:
        aws.describe_endpoint_config(EndpointConfigName=name)
        return False
    except ClientError:
        try:
            aws.describe_model(ModelName=name)
            return False
        except ClientError:
            return True


def test_eventbridge_approval_deploys_with_the_functions_settings(aws, monkeypatch):
    package = register(aws, status="PendingManualApproval")
    aws.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    monkeypatch.setenv(deploy_handler.SETTINGS_VARIABLE, json.dumps({"endpoint_name": "detector", "role_arn": ROLE, "instance_type": "ml.m5.large"}))
    approved = {
        "version": "0", "source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change", "account": "123456789012",
        "region": REGION, "resources": [package],
        "detail": {"ModelPackageGroupName": "detector", "ModelPackageArn": package, "ModelApprovalStatus": "Approved"},
    }
    result = handler(approved, clients=clients(aws))
    assert result["Action"] == "created" and result["ModelPackageArn"] == package
    assert aws.describe_model(ModelName=result["ModelName"])["Containers"][0]["ModelPackageName"] == package


def test_eventbridge_event_for_a_package_the_pipeline_registered_approved_is_left_to_its_deploy_step(aws):
    aws.create_model_package_group(ModelPackageGroupName="detector")
    package = aws.create_model_package(
        ModelPackageGroupName="detector", ModelApprovalStatus="Approved", CustomerMetadataProperties={"RegisteredAs": "Approved"},
        InferenceSpecification={"Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/detector-serve:1",
                                                "ModelDataUrl": "s3://b/model.tar.gz"}],
                                "SupportedContentTypes": ["image/jpeg"], "SupportedResponseMIMETypes": ["application/json"]},
    )["ModelPackageArn"]
    created = {"detail-type": "SageMaker Model Package State Change", "detail": {"ModelPackageArn": package, "ModelApprovalStatus": "Approved"}}
    result = handler(created, clients=clients(aws), defaults={"endpoint_name": "detector", "role_arn": ROLE})
    assert result["Action"] == "skipped" and "whose Deploy step deploys it" in result["Reason"]
    assert aws.list_endpoints()["Endpoints"] == []
    assert deploy(aws, package)["Action"] == "created"  # the pipeline's own input deploys it


def test_eventbridge_event_without_settings_is_refused(aws, monkeypatch):
    monkeypatch.delenv(deploy_handler.SETTINGS_VARIABLE, raising=False)
    with pytest.raises(DeployError, match="missing endpoint_name, role_arn"):
        handler({"detail-type": "SageMaker Model Package State Change", "detail": {"ModelPackageArn": PACKAGE}}, clients=clients(aws))


def test_champion_is_the_served_package_else_the_newest_approved(aws):
    lookup = {"action": "find_champion", "endpoint_name": "detector", "model_package_group": "detector", "fallback_model_data": "s3://b/new.tar.gz"}
    aws.create_model_package_group(ModelPackageGroupName="detector")
    assert handler(lookup, clients=clients(aws)) | {"ChampionSource": ""} == {
        "ChampionArn": "none", "ChampionModelData": "s3://b/new.tar.gz", "ChampionSource": ""}
    first = register(aws, model_data="s3://b/1.tar.gz")
    register(aws, status="Rejected", model_data="s3://b/rejected.tar.gz")
    assert handler(lookup, clients=clients(aws))["ChampionArn"] == first
    deploy(aws, first)
    newer = register(aws, model_data="s3://b/2.tar.gz")
    found = handler(lookup, clients=clients(aws))
    assert (found["ChampionArn"], found["ChampionModelData"]) == (first, "s3://b/1.tar.gz")  # served beats newer
    assert "served by endpoint detector" in found["ChampionSource"]
    assert handler({**lookup, "endpoint_name": "elsewhere"}, clients=clients(aws))["ChampionArn"] == newer


def stubbed_client():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def test_other_aws_errors_are_not_swallowed():
    client, stub = stubbed_client()
    stub.add_client_error("describe_model_package", "AccessDeniedException", "not authorized to perform sagemaker:DescribeModelPackage")
    with stub, pytest.raises(ClientError, match="AccessDenied"):
        handler(event(PACKAGE), client=client)


def test_names_fit_sagemaker_limits_and_depend_on_the_inputs():
    long = deploy_handler.resource_name("e" * 80, PACKAGE, "ml.g5.xlarge", 1, ROLE)
    assert len(long) <= 63
    assert deploy_handler.resource_name("detector", PACKAGE, "ml.g5.xlarge") != deploy_handler.resource_name("detector", PACKAGE, "ml.g5.2xlarge")


def test_lambda_code_runs_with_only_boto3_and_the_standard_library(tmp_path):
    """The archive deploy-lambda uploads: its modules import each other and nothing of the project."""
    with zipfile.ZipFile(__import__("io").BytesIO(control.handler_zip())) as archive:
        archive.extractall(tmp_path)
        names = sorted(archive.namelist())
    assert names == sorted(f"pipeline/{m}" for m in control.LAMBDA_MODULES)
    for name in names:
        tree = ast.parse((tmp_path / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {a.name.split(".")[0] for a in node.names} <= {"hashlib", "json", "logging", "os", "boto3", "botocore"}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                assert node.module.split(".")[0] in {"__future__", "dataclasses", "boto3", "botocore"}, (name, node.module)
    program = f"import {control.LAMBDA_HANDLER.rsplit('.', 1)[0]} as m; print(callable(m.handler))"
    result = subprocess.run([sys.executable, "-E", "-s", "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr


def test_names_shared_with_the_pipeline_agree():
    from detector import pipeline_spec as spec

    # The Lambda ships without the detector package: its copies of shared names must match.
    assert deploy_handler.REGISTERED_AS == spec.REGISTERED_AS
    assert deploy_handler.SETTINGS_VARIABLE == control.SETTINGS_VARIABLE
    from pipeline.endpoint_config import MODES, TRAFFIC

    assert spec.BY_NAME["EndpointMode"].choices == MODES and spec.BY_NAME["TrafficRouting"].choices == TRAFFIC
