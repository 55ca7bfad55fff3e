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
    group_line, pipeline_line = capsys.readouterr().out.splitlines()
    assert group_line == "created model package group detector"
    assert aws.describe_model_package_group(ModelPackageGroupName="detector")["ModelPackageGroupName"] == "detector"
    action, arn = pipeline_line.split()
    assert action == "created" and arn.endswith(":pipeline/detector")
    stored = json.loads(aws.describe_pipeline(PipelineName="detector")["PipelineDefinition"])
    assert [s["Name"] for s in stored["Steps"]] == ["Train", "Evaluate", "CheckTestingAP"]

    assert main(["upsert", *example.CLI_ARGS, "--max-run", "3600", "--max-wait", "7200"]) == 0
    assert capsys.readouterr().out.split() == ["updated", arn]
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


def test_deploy_lambda_creates_then_updates_the_function(aws, capsys):
    iam = boto3.client("iam", region_name=REGION)
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName="detector-deploy", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", role]) == 0
    action, arn = capsys.readouterr().out.split()
    assert action == "created" and arn.endswith(":function:detector-deploy")
    function = boto3.client("lambda", region_name=REGION).get_function(FunctionName="detector-deploy")["Configuration"]
    assert (function["Handler"], function["Runtime"], function["Role"]) == ("deploy_handler.handler", "python3.12", role)

    assert main(["deploy-lambda", "--region", REGION, "--lambda-role", role]) == 0
    assert capsys.readouterr().out.split() == ["updated", arn]


def test_lambda_package_holds_the_handler_at_its_root():
    with zipfile.ZipFile(io.BytesIO(control.handler_zip())) as archive:
        assert archive.namelist() == ["deploy_handler.py"]
        assert b"def handler(event" in archive.read("deploy_handler.py")
    assert control.handler_zip() == control.handler_zip()  # same bytes: no spurious code updates
