"""`python -m pipeline` against moto (upsert, start, deploy-lambda) and botocore's Stubber (status)."""

import io
import json
import zipfile

import boto3
import pytest
from botocore.stub import Stubber

import settings_example as example
from pipeline import control
from pipeline.cli import main
from aws_mock import aws  # noqa: F401  (fixture)

REGION = example.REGION
EMPTY_DEFINITION = '{"Version": "2020-12-01", "Steps": []}'


def test_upsert_creates_then_updates_the_pipeline(aws, capsys):
    assert main(["upsert", *example.CLI_ARGS]) == 0
    captured = capsys.readouterr()
    group_line, pipeline_line = captured.out.splitlines()
    assert group_line == "created model package group detector"
    assert aws.describe_model_package_group(ModelPackageGroupName="detector")["ModelPackageGroupName"] == "detector"
    action, arn = pipeline_line.split()
    assert action == "created" and arn.endswith(":pipeline/detector")
    stored = json.loads(aws.describe_pipeline(PipelineName="detector")["PipelineDefinition"])
    assert [s["Name"] for s in stored["Steps"]] == ["Train", "FindChampion", "Evaluate", "CheckTestingAP"]

    assert "names no version, so the pipeline invokes $LATEST" in captured.err
    versioned = [*example.CLI_ARGS[:-1], example.LAMBDA_ARN + ":3"]
    assert main(["upsert", *versioned, "--max-run", "3600", "--max-wait", "7200"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["updated", arn] and err == ""
    stored = json.loads(aws.describe_pipeline(PipelineName="detector")["PipelineDefinition"])
    assert stored["Steps"][0]["Arguments"]["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert len(aws.list_pipelines()["PipelineSummaries"]) == 1


def test_start_passes_typed_overrides(aws, capsys):
    control.upsert_pipeline(aws, "detector", EMPTY_DEFINITION, example.ROLE)
    overrides = ["MaxIter=300", "MinTestingAP=0.7", "TrainingInstanceType=ml.g5.12xlarge"]
    assert main(["start", "--region", REGION, *[arg for o in overrides for arg in ("--param", o)]]) == 0
    arn = capsys.readouterr().out.strip()
    assert arn.startswith(f"arn:aws:sagemaker:{REGION}:") and ":pipeline/detector/execution/" in arn
    parameters = aws.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in parameters} == {"MaxIter": "300", "MinTestingAP": "0.7", "TrainingInstanceType": "ml.g5.12xlarge"}


def test_bad_override_is_refused_before_anything_is_sent(aws, capsys):
    control.upsert_pipeline(aws, "detector", EMPTY_DEFINITION, example.ROLE)
    assert main(["start", "--region", REGION, "--param", "MaxIter=many"]) == 1
    assert capsys.readouterr().err == "error: parameter MaxIter='many': expected a whole number\n"
    assert aws.list_pipeline_executions(PipelineName="detector")["PipelineExecutionSummaries"] == []


def test_aws_errors_are_one_line(aws, capsys):
    assert main(["start", "--region", REGION, "--name", "missing"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: AWS StartPipelineExecution failed: ") and err.count("\n") == 1


def test_missing_settings_name_the_option_and_variable(monkeypatch, capsys):
    monkeypatch.delenv("DETECTOR_BUCKET", raising=False)
    args = list(example.CLI_ARGS)
    i = args.index("--bucket")
    del args[i:i + 2]
    assert main(["definition", *args]) == 1
    assert capsys.readouterr().err == "error: --bucket is required (or set DETECTOR_BUCKET)\n"


def test_options_default_to_environment_variables(monkeypatch):
    from pipeline.cli import build_parser

    monkeypatch.setenv("DETECTOR_TRAIN_IMAGE", example.TRAIN_IMAGE)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    args = build_parser().parse_args(["definition"])
    assert (args.train_image, args.region, args.prefix, args.name) == (example.TRAIN_IMAGE, "eu-west-1", "detector", "detector")


def test_status_lists_steps_in_order(capsys, monkeypatch):
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    arn = f"arn:aws:sagemaker:{REGION}:{example.ACCOUNT}:pipeline/detector/execution/abc123"
    stub = Stubber(client)
    stub.add_response("describe_pipeline_execution", {"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Failed",
                                                      "FailureReason": "Step failure: One or multiple steps failed."})
    stub.add_response("list_pipeline_execution_steps", {"NextToken": "page2", "PipelineExecutionSteps": [
        {"StepName": "Train", "StepStatus": "Succeeded", "Metadata": {"TrainingJob": {"Arn": "arn:aws:sagemaker:us-east-1:111122223333:training-job/t1"}}},
        {"StepName": "Evaluate", "StepStatus": "Succeeded", "Metadata": {"ProcessingJob": {"Arn": "arn:aws:sagemaker:us-east-1:111122223333:processing-job/p1"}}},
    ]}, {"PipelineExecutionArn": arn, "SortOrder": "Ascending"})
    stub.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
        {"StepName": "CheckTestingAP", "StepStatus": "Succeeded", "Metadata": {"Condition": {"Outcome": "False"}}},
        {"StepName": "TestingAPTooLow", "StepStatus": "Failed", "FailureReason": "Model not registered: testing_ap 0.41 is below MinTestingAP 0.5"},
    ]}, {"PipelineExecutionArn": arn, "SortOrder": "Ascending", "NextToken": "page2"})
    monkeypatch.setattr("pipeline.cli._client", lambda service, region: client)
    with stub:
        assert main(["status", "--region", REGION, arn]) == 0
    stub.assert_no_pending_responses()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{arn}  Failed"
    assert [line.split()[:2] for line in lines[2:]] == [
        ["Train", "Succeeded"], ["Evaluate", "Succeeded"], ["CheckTestingAP", "Succeeded"], ["TestingAPTooLow", "Failed"],
    ]
    assert lines[-1].endswith("Model not registered: testing_ap 0.41 is below MinTestingAP 0.5")


def test_status_without_executions_says_so(aws, capsys):
    control.upsert_pipeline(aws, "detector", EMPTY_DEFINITION, example.ROLE)
    assert main(["status", "--region", REGION]) == 1
    assert "pipeline detector has no executions yet" in capsys.readouterr().err


def lambda_role() -> str:
    iam = boto3.client("iam", region_name=REGION)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    return iam.create_role(RoleName="detector-deploy", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def test_deploy_lambda_publishes_a_version_on_create_and_update_and_sets_up_the_approval_rule(aws, capsys):
    role = lambda_role()
    args = ["deploy-lambda", "--region", REGION, "--lambda-role", role, "--role", example.ROLE, "--setting", "endpoint_mode=serverless"]
    assert main(args) == 0
    first, rule_line = capsys.readouterr().out.splitlines()
    action, arn = first.split()
    assert action == "created" and arn.endswith(":function:detector-deploy:1")  # the version the pipeline invokes
    lambda_client = boto3.client("lambda", region_name=REGION)
    function = lambda_client.get_function(FunctionName="detector-deploy")["Configuration"]
    assert (function["Handler"], function["Runtime"], function["Role"]) == ("pipeline.deploy_handler.handler", "python3.12", role)
    settings = json.loads(function["Environment"]["Variables"]["DETECTOR_DEPLOY_SETTINGS"])
    assert settings == {"endpoint_name": "detector", "instance_type": "ml.g5.xlarge", "role_arn": example.ROLE, "endpoint_mode": "serverless"}

    events = boto3.client("events", region_name=REGION)
    rule = events.describe_rule(Name="detector-deploy-on-approval")
    assert rule_line == f"approval rule {rule['Arn']}"
    assert json.loads(rule["EventPattern"]) == {
        "source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": ["detector"], "ModelApprovalStatus": ["Approved"]},
    }
    [target] = events.list_targets_by_rule(Rule="detector-deploy-on-approval")["Targets"]
    assert target["Arn"] == arn
    policy = json.loads(lambda_client.get_policy(FunctionName=arn)["Policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]

    assert main(args) == 0  # the same way again: a new version, one target, one permission
    action, arn2 = capsys.readouterr().out.splitlines()[0].split()
    assert action == "updated" and arn2.endswith(":function:detector-deploy:2")
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule="detector-deploy-on-approval")["Targets"]] == [arn2]


def test_deploy_lambda_refuses_unknown_or_bad_settings(aws, capsys):
    role = lambda_role()
    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", role, "--role", example.ROLE, "--setting", "mode=async"]) == 1
    assert "unknown deploy setting mode; expected one of endpoint_name" in capsys.readouterr().err
    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", role, "--role", example.ROLE, "--setting", "endpoint_mode=batch"]) == 1
    assert "endpoint_mode 'batch': expected one of realtime, async, serverless" in capsys.readouterr().err
    assert boto3.client("lambda", region_name=REGION).list_functions()["Functions"] == []


def register_pending(aws) -> str:
    aws.create_model_package_group(ModelPackageGroupName="detector")
    return aws.create_model_package(
        ModelPackageGroupName="detector", ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": example.SERVE_IMAGE, "ModelDataUrl": f"s3://{example.BUCKET}/detector/models/m/model.tar.gz"}],
            "SupportedContentTypes": ["image/jpeg"], "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_approve_then_deploy(aws, capsys):
    package = register_pending(aws)
    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", lambda_role(), "--role", example.ROLE,
                 "--instance-type", "ml.m5.large"]) == 0
    capsys.readouterr()
    assert main(["deploy", "--region", REGION, package]) == 0
    assert json.loads(capsys.readouterr().out)["Action"] == "skipped"  # not approved yet
    assert main(["approve", "--region", REGION, package]) == 0
    assert capsys.readouterr().out.strip() == f"approved {package} (was PendingManualApproval); the approval rule deploys it"
    assert aws.describe_model_package(ModelPackageName=package)["ModelApprovalStatus"] == "Approved"
    assert main(["deploy", "--region", REGION, package, "--setting", "data_capture_percent=10",
                 "--setting", f"data_capture_s3=s3://{example.BUCKET}/detector/data-capture/"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["Action"] == "created" and result["EndpointName"] == "detector"
    config = aws.describe_endpoint_config(EndpointConfigName=result["EndpointConfigName"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.large"  # the function's settings
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 10  # and the override


def test_deploy_refusal_is_one_line(aws, capsys):
    package = register_pending(aws)
    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", lambda_role(), "--role", example.ROLE]) == 0
    capsys.readouterr()
    assert main(["deploy", "--region", REGION, package, "--setting", "endpoint_mode=async"]) == 1
    assert capsys.readouterr().err == "error: async_output_s3 '': expected an s3:// prefix for an async endpoint (endpoint detector)\n"


def test_status_shows_the_processing_jobs_exit_message(capsys, monkeypatch):
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    arn = f"arn:aws:sagemaker:{REGION}:{example.ACCOUNT}:pipeline/detector/execution/abc123"
    job = f"arn:aws:sagemaker:{REGION}:{example.ACCOUNT}:processing-job/pipelines-abc-evaluate"
    stub = Stubber(client)
    stub.add_response("describe_pipeline_execution", {"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Failed"})
    stub.add_response("list_pipeline_execution_steps", {"PipelineExecutionSteps": [
        {"StepName": "Evaluate", "StepStatus": "Failed", "FailureReason": "ClientError: AlgorithmError: see job logs",
         "Metadata": {"ProcessingJob": {"Arn": job}}},
    ]})
    stub.add_response("describe_processing_job", {
        "ProcessingJobName": "pipelines-abc-evaluate", "ProcessingJobArn": job, "ProcessingJobStatus": "Failed",
        "ExitMessage": "test channel: annotations.json: not valid JSON\n", "CreationTime": "2026-12-01",
        "AppSpecification": {"ImageUri": example.TRAIN_IMAGE},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}},
        "RoleArn": example.ROLE,
    }, {"ProcessingJobName": "pipelines-abc-evaluate"})
    monkeypatch.setattr("pipeline.cli._client", lambda service, region: client)
    with stub:
        assert main(["status", "--region", REGION, arn]) == 0
    stub.assert_no_pending_responses()
    assert capsys.readouterr().out.splitlines()[-1].endswith(
        "ClientError: AlgorithmError: see job logs | exit message: test channel: annotations.json: not valid JSON")


def test_lambda_package_holds_the_handler_package():
    with zipfile.ZipFile(io.BytesIO(control.handler_zip())) as archive:
        assert archive.namelist() == [f"pipeline/{name}" for name in control.LAMBDA_MODULES]
        assert b"def handler(event" in archive.read("pipeline/deploy_handler.py")
    assert control.handler_zip() == control.handler_zip()  # same bytes: no spurious code updates


def test_deploy_wait_registers_autoscaling_once_in_service(aws, capsys):
    package = register_pending(aws)
    aws.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", lambda_role(), "--role", example.ROLE,
                 "--instance-type", "ml.m5.large", "--setting", "max_instance_count=3", "--setting", "invocations_per_instance=50"]) == 0
    capsys.readouterr()
    assert main(["deploy", "--region", REGION, package, "--wait"]) == 0  # moto endpoints are InService at once
    out = capsys.readouterr().out
    decoder, documents, at = json.JSONDecoder(), [], 0
    while at < len(out.rstrip()):
        document, at = decoder.raw_decode(out, at)
        documents.append(document)
        at += len(out[at:]) - len(out[at:].lstrip())
    first, second = documents
    assert first["Action"] == "created" and second["Action"] == "unchanged"
    [target] = boto3.client("application-autoscaling", region_name=REGION).describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 3)
