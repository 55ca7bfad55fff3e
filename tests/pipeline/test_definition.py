"""The pipeline definition: built offline, with the structure the issue asks for, and stable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import network_guard
import settings_example as example
from helpers import REPO
from detector import pipeline_spec as spec
from pipeline.settings import PipelineConfigError

SNAPSHOT = Path(__file__).parent / "snapshots" / "definition.json"
ROOT = f"s3://{example.BUCKET}/detector"
EXECUTION_ID = {"Get": "Execution.PipelineExecutionId"}
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION")


@pytest.fixture(scope="module")
def definition() -> dict:
    """Built in-process with every socket blocked; any attempt fails the test."""
    attempts: list = []
    originals = network_guard.install(attempts)
    try:
        from pipeline.definition import pipeline_definition

        text = pipeline_definition(example.settings())
    finally:
        network_guard.uninstall(originals)
    assert attempts == []
    return json.loads(text)


def steps_by_name(definition: dict) -> dict:
    found = {}
    for step in definition["Steps"]:
        found[step["Name"]] = step
        for branch in ("IfSteps", "ElseSteps"):
            for inner in step.get("Arguments", {}).get(branch, []):
                found.update(steps_by_name({"Steps": [inner]}))  # conditions nest
    return found


def test_cli_prints_the_definition_without_credentials_or_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARIABLES}
    env.update(
        HOME=str(tmp_path),  # no ~/.aws, no ~/.config/sagemaker
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        NETWORK_ATTEMPTS_FILE=str(tmp_path / "attempts.txt"),
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), str(Path(__file__).parent)]),
    )
    program = "import network_guard, runpy; network_guard.install([]); runpy.run_module('pipeline', run_name='__main__')"
    result = subprocess.run(
        [sys.executable, "-c", program, "definition", *example.CLI_ARGS],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert not (tmp_path / "attempts.txt").exists(), (tmp_path / "attempts.txt").read_text()
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert [s["Name"] for s in printed["Steps"]] == [spec.STEP_TRAIN, spec.STEP_FIND_CHAMPION, spec.STEP_EVALUATE, spec.STEP_CHECK]


def test_matches_the_snapshot(definition):
    """Any change to the definition shows up here; refresh with UPDATE_SNAPSHOTS=1 after reviewing it."""
    rendered = json.dumps(definition, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(rendered)
    assert rendered == SNAPSHOT.read_text()


def test_rebuilds_identically_apart_from_added_static_hyperparameters(definition):
    from pipeline.definition import pipeline_definition

    model = "detector/faster_rcnn_R_18_FPN_128px.yaml"
    rebuilt = json.loads(pipeline_definition(example.settings(hyperparameters={"model": model})))
    assert rebuilt["Steps"][0]["Arguments"]["HyperParameters"].pop("model") == model
    assert rebuilt == definition


def test_parameters_come_from_the_spec(definition):
    assert definition["Parameters"] == [
        {"Name": p.name, "Type": p.type, "DefaultValue": p.default_for(ROOT)} for p in spec.PARAMETERS
    ]


def test_steps_types_and_order(definition):
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [
        (spec.STEP_TRAIN, "Training"), (spec.STEP_FIND_CHAMPION, "Lambda"), (spec.STEP_EVALUATE, "Processing"),
        (spec.STEP_CHECK, "Condition"),
    ]
    check = definition["Steps"][3]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in check["IfSteps"]] == [(spec.STEP_CHECK_CHAMPION, "Condition")]
    assert [(s["Name"], s["Type"]) for s in check["ElseSteps"]] == [(spec.STEP_FAIL, "Fail")]
    champion = check["IfSteps"][0]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in champion["IfSteps"]] == [
        (spec.STEP_REGISTER, "RegisterModel"), (spec.STEP_DEPLOY, "Lambda"), (spec.STEP_CHECK_TRANSFORM, "Condition"),
    ]
    assert [(s["Name"], s["Type"]) for s in champion["ElseSteps"]] == [(spec.STEP_CHAMPION_FAIL, "Fail")]


def test_training_step(definition):
    args = steps_by_name(definition)[spec.STEP_TRAIN]["Arguments"]
    algorithm = args["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == example.TRAIN_IMAGE
    assert "ContainerEntrypoint" not in algorithm  # the image's own ENTRYPOINT: `detector train`
    assert algorithm["MetricDefinitions"] == [
        {"Name": "training_ap", "Regex": r"training_ap ([0-9\.]+)"},
        {"Name": "testing_ap", "Regex": r"testing_ap ([0-9\.]+)"},
    ]
    assert args["EnableManagedSpotTraining"] is True
    stopping = args["StoppingCondition"]
    assert stopping == {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800}
    assert stopping["MaxWaitTimeInSeconds"] > stopping["MaxRuntimeInSeconds"]
    assert args["CheckpointConfig"] == {
        "S3Uri": {"Std:Join": {"On": "/", "Values": [{"Get": "Parameters.s3Path"}, EXECUTION_ID]}},
        "LocalPath": "/opt/ml/checkpoints",
    }
    # Numeric parameters reach the container as strings (hyperparameters.json is string -> string).
    for parameter, hyperparameter in (("NumEpoch", "num_epochs"), ("LearningRate", "learning_rate"), ("MaxIter", "max_iter")):
        assert args["HyperParameters"][hyperparameter] == {"Std:Join": {"On": "", "Values": [{"Get": f"Parameters.{parameter}"}]}}
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"]) for c in args["InputDataConfig"]] == [
        ("training", {"Get": "Parameters.TrainingData"}), ("testing", {"Get": "Parameters.TestingData"}),
    ]
    assert args["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert args["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainingInstanceCount"}
    assert args["OutputDataConfig"]["S3OutputPath"] == f"{ROOT}/models"
    assert args["RoleArn"] == example.ROLE


def test_evaluation_step_runs_the_baked_in_command(definition):
    step = steps_by_name(definition)[spec.STEP_EVALUATE]
    args = step["Arguments"]
    champion_arn = {"Get": "Steps.FindChampion.OutputParameters['ChampionArn']"}
    assert args["AppSpecification"] == {
        "ImageUri": example.TRAIN_IMAGE, "ContainerEntrypoint": ["detector", "evaluate"],
        "ContainerArguments": ["--champion", "/opt/ml/processing/champion", "--champion-arn", champion_arn,
                               "--max-regression", {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.MaxRegression"}]}}],
    }
    inputs = {i["InputName"]: i["S3Input"] for i in args["ProcessingInputs"]}
    assert set(inputs) == {"model", "test", "champion"}  # no uploaded code input
    assert inputs["champion"]["S3Uri"] == {"Get": "Steps.FindChampion.OutputParameters['ChampionModelData']"}
    assert inputs["champion"]["LocalPath"] == "/opt/ml/processing/champion"
    assert inputs["model"]["S3Uri"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inputs["model"]["LocalPath"] == "/opt/ml/processing/model"
    assert inputs["test"]["S3Uri"] == {"Get": "Parameters.TestingData"}
    assert inputs["test"]["LocalPath"] == "/opt/ml/processing/test"
    [output] = args["ProcessingOutputConfig"]["Outputs"]
    assert output["OutputName"] == spec.EVALUATION_OUTPUT
    assert output["S3Output"]["LocalPath"] == "/opt/ml/processing/evaluation"
    assert output["S3Output"]["S3Uri"] == {"Std:Join": {"On": "/", "Values": [f"{ROOT}/evaluation", EXECUTION_ID]}}
    assert step["PropertyFiles"] == [{"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}]


TESTING_AP = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}, "Path": "metrics.testing_ap.value"}}


CHAMPION_BAR = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}, "Path": "champion.bar.testing_ap"}}
CHAMPION_AP = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"}, "Path": "champion.metrics.testing_ap"}}


def test_gate_compares_testing_ap_with_the_threshold_then_with_the_champion(definition):
    assert spec.TESTING_AP_PATH == "metrics.testing_ap.value"  # what `detector evaluate` writes (tests/commands)
    [condition] = steps_by_name(definition)[spec.STEP_CHECK]["Arguments"]["Conditions"]
    assert condition == {"Type": "GreaterThanOrEqualTo", "LeftValue": TESTING_AP, "RightValue": {"Get": "Parameters.MinTestingAP"}}
    [condition] = steps_by_name(definition)[spec.STEP_CHECK_CHAMPION]["Arguments"]["Conditions"]
    # The bar is the champion's testing_ap minus MaxRegression (0 with no champion), computed by Evaluate.
    assert condition == {"Type": "GreaterThanOrEqualTo", "LeftValue": TESTING_AP, "RightValue": CHAMPION_BAR}


def test_fail_messages_name_the_test_and_both_numbers(definition):
    message = steps_by_name(definition)[spec.STEP_FAIL]["Arguments"]["ErrorMessage"]["Std:Join"]
    assert TESTING_AP in message["Values"]
    assert {"Get": "Parameters.MinTestingAP"} in message["Values"]
    message = steps_by_name(definition)[spec.STEP_CHAMPION_FAIL]["Arguments"]["ErrorMessage"]["Std:Join"]
    assert message["On"] == " "
    assert message["Values"] == [
        "Model not registered: testing_ap", TESTING_AP, "is below the champion's testing_ap", CHAMPION_AP, "minus MaxRegression",
        {"Get": "Parameters.MaxRegression"}, "= bar", CHAMPION_BAR, "; champion", {"Get": "Steps.FindChampion.OutputParameters['ChampionArn']"},
    ]


def test_find_champion_step(definition):
    step = steps_by_name(definition)[spec.STEP_FIND_CHAMPION]
    assert step["FunctionArn"] == example.LAMBDA_ARN
    assert step["Arguments"] == {
        "action": "find_champion", "endpoint_name": {"Get": "Parameters.EndpointName"}, "model_package_group": "detector",
        "fallback_model_data": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
    }
    assert [o["OutputName"] for o in step["OutputParameters"]] == ["ChampionArn", "ChampionModelData", "ChampionSource"]


@pytest.fixture(scope="module")
def mask_definition() -> dict:
    """The same pipeline for a mask model: `model` (a fixed hyperparameter) names the packaged Mask R-CNN."""
    from pipeline.definition import pipeline_definition

    return json.loads(pipeline_definition(example.settings(hyperparameters={"model": "detector/mask_rcnn_R_18_FPN_128px.yaml"})))


def test_a_mask_model_gates_on_testing_mask_ap_in_the_condition_and_the_fail_message(mask_definition):
    mask_ap = {"Std:JsonGet": {**TESTING_AP["Std:JsonGet"], "Path": "metrics.testing_mask_ap.value"}}
    steps = steps_by_name(mask_definition)
    [condition] = steps[spec.STEP_CHECK]["Arguments"]["Conditions"]
    assert condition["LeftValue"] == mask_ap and condition["RightValue"] == {"Get": "Parameters.MinTestingAP"}
    message = steps[spec.STEP_FAIL]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert message == ["Model not registered: testing_mask_ap", mask_ap, "is below MinTestingAP", {"Get": "Parameters.MinTestingAP"}]
    metrics = steps[spec.STEP_TRAIN]["Arguments"]["AlgorithmSpecification"]["MetricDefinitions"]
    assert {m["Name"] for m in metrics} == {"training_ap", "testing_ap", "training_mask_ap", "testing_mask_ap"}
    assert steps[spec.STEP_TRAIN]["Arguments"]["HyperParameters"]["model"] == "detector/mask_rcnn_R_18_FPN_128px.yaml"


def test_an_unknown_gate_metric_is_refused_before_anything_is_built():
    from pipeline.definition import pipeline_definition

    with pytest.raises(spec.PipelineParameterError, match="gate metric 'testing_ap50': expected one of testing_ap, testing_mask_ap"):
        pipeline_definition(example.settings(), gate_metric="testing_ap50")


def test_registration(definition):
    args = steps_by_name(definition)[spec.STEP_REGISTER]["Arguments"]
    assert args["ModelPackageGroupName"] == "detector"
    inference = args["InferenceSpecification"]
    [container] = inference["Containers"]
    assert container["Image"] == example.SERVE_IMAGE
    assert container["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert inference["SupportedContentTypes"] == ["image/jpeg", "image/png", "application/json", "application/x-npy"]
    assert inference["SupportedResponseMIMETypes"] == ["application/json"]
    assert args["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert args["CustomerMetadataProperties"] == {spec.REGISTERED_AS: {"Get": "Parameters.ModelApprovalStatus"}}
    statistics = args["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"] == {
        "Std:Join": {"On": "/", "Values": [{"Std:Join": {"On": "/", "Values": [f"{ROOT}/evaluation", EXECUTION_ID]}}, "evaluation.json"]}
    }


def test_deploy_lambda_step(definition):
    step = steps_by_name(definition)[spec.STEP_DEPLOY]
    assert step["FunctionArn"] == example.LAMBDA_ARN
    from pipeline.definition import DEPLOY_INPUTS
    from pipeline.endpoint_config import DeploySettings

    assert step["Arguments"] == {
        "model_package_arn": {"Get": "Steps.Register.ModelPackageArn"},
        "role_arn": example.ROLE,
        **{key: {"Get": f"Parameters.{name}"} for key, name in DEPLOY_INPUTS.items()},
        "async_output_s3": f"{ROOT}/async/output/",
        "async_failure_s3": f"{ROOT}/async/failures/",
        "data_capture_s3": f"{ROOT}/data-capture/",
    }
    assert set(step["Arguments"]) - {"model_package_arn"} <= set(DeploySettings.__dataclass_fields__)
    assert {p.name for p in spec.PARAMETERS} >= set(DEPLOY_INPUTS.values())
    # The parameter defaults are settings the Lambda accepts.
    defaults = {key: spec.BY_NAME[name].default for key, name in DEPLOY_INPUTS.items()}
    DeploySettings.from_event({**defaults, "role_arn": example.ROLE, "async_output_s3": "s3://b/o/", "async_failure_s3": "s3://b/f/"})
    assert {o["OutputName"] for o in step["OutputParameters"]} == {"EndpointName", "Action"}


def test_every_s3_location_is_explicit(definition):
    text = json.dumps(definition)
    assert "sagemaker-us-east-1" not in text  # no SDK default bucket
    strings = []

    def walk(node):
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.startswith("s3://"):
            strings.append(node)

    walk(definition)
    assert strings and all(s.startswith(ROOT + "/") for s in strings), strings


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_run_s": 7200, "max_wait_s": 7200}, "max_wait 7200 s must be greater than max_run 7200 s"),
        ({"max_run_s": 30 * 24 * 3600, "max_wait_s": 31 * 24 * 3600}, "expected 1 to 2419200 s (28 days)"),
        ({"role": "DetectorSageMaker"}, "role 'DetectorSageMaker' is not valid: expected an IAM role ARN"),
        ({"bucket": "s3://bucket/prefix"}, "bucket 's3://bucket/prefix' is not valid"),
        ({"train_image": ""}, "train image '' is not valid"),
        ({"deploy_lambda_arn": "detector-deploy"}, "deploy Lambda ARN 'detector-deploy' is not valid"),
        ({"prefix": "/detector/"}, "without leading or trailing '/'"),
        ({"hyperparameters": {"max_iter": 3}}, "hyperparameters must map strings to strings"),
    ],
)
def test_bad_settings_are_rejected_before_anything_is_built(overrides, message):
    with pytest.raises(PipelineConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        example.settings(**overrides)


def test_transform_step_after_register_skipped_while_the_input_is_empty(definition):
    steps = steps_by_name(definition)
    check = steps[spec.STEP_CHECK_TRANSFORM]
    assert check["DependsOn"] == [spec.STEP_REGISTER]
    assert check["Arguments"]["Conditions"] == [
        {"Type": "Not", "Condition": {"Type": "Equals", "LeftValue": {"Get": "Parameters.TransformInput"}, "RightValue": ""}}
    ]
    assert [s["Name"] for s in check["Arguments"]["IfSteps"]] == [spec.STEP_TRANSFORM_MODEL, spec.STEP_TRANSFORM]
    assert check["Arguments"]["ElseSteps"] == []
    assert {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}["TransformInput"] == ""

    container = steps[spec.STEP_TRANSFORM_MODEL]["Arguments"]["PrimaryContainer"]
    assert container == {"Image": example.SERVE_IMAGE, "Environment": {"SAGEMAKER_BATCH": "true"},
                         "ModelDataUrl": {"Get": f"Steps.{spec.STEP_TRAIN}.ModelArtifacts.S3ModelArtifacts"}}
    args = steps[spec.STEP_TRANSFORM]["Arguments"]
    assert args["ModelName"] == {"Get": f"Steps.{spec.STEP_TRANSFORM_MODEL}.ModelName"}
    assert args["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": {"Get": "Parameters.TransformInput"}}},
        "ContentType": "application/x-image", "SplitType": "None",
    }
    assert args["TransformResources"] == {"InstanceType": {"Get": "Parameters.TransformInstanceType"}, "InstanceCount": 1}
    assert args["TransformOutput"]["S3OutputPath"] == {"Std:Join": {"On": "/", "Values": [f"{ROOT}/transform", EXECUTION_ID]}}
    assert args["ModelClientConfig"]["InvocationsTimeoutInSeconds"] == 3600
    # Left to the container's GET /execution-parameters.
    assert "MaxPayloadInMB" not in args and "MaxConcurrentTransforms" not in args


def test_transform_parameters_parse_and_an_empty_input_is_allowed():
    assert spec.parse_overrides(["TransformInput=", "TransformInstanceType=ml.c5.xlarge"]) == {
        "TransformInput": "", "TransformInstanceType": "ml.c5.xlarge"}
    with pytest.raises(spec.PipelineParameterError, match="TransformInstanceType: expected a non-empty string"):
        spec.parse_overrides(["TransformInstanceType="])


# --- the local-mode variant (SageMaker's local mode cannot run Lambda or register steps) ------------------

LOCAL_TRAIN_IMAGE, LOCAL_SERVE_IMAGE = "detector-train:cpu", "detector-serve:cpu"  # names in a local engine's store
LOCAL_ONLY_STEPS = (spec.STEP_TRAIN, spec.STEP_EVALUATE, spec.STEP_CHECK, spec.STEP_FAIL, spec.STEP_CHECK_TRANSFORM,
                    spec.STEP_TRANSFORM_MODEL, spec.STEP_TRANSFORM)


def build_local_definition(folder: Path, **overrides) -> dict:
    """The local variant's definition, built in-process with every socket blocked; any attempt fails the test."""
    attempts: list = []
    originals = network_guard.install(attempts)
    try:
        from pipeline.definition import LocalPipelineSettings, local_pipeline_definition

        text = local_pipeline_definition(LocalPipelineSettings(LOCAL_TRAIN_IMAGE, LOCAL_SERVE_IMAGE, folder, **overrides))
    finally:
        network_guard.uninstall(originals)
    assert attempts == []
    return json.loads(text)


@pytest.fixture(scope="module")
def local_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("local-pipeline")


@pytest.fixture(scope="module")
def local_definition(local_folder) -> dict:
    return build_local_definition(local_folder, pretrained_channel=True,
                                  hyperparameters={"model": "detector/faster_rcnn_R_18_FPN_128px.yaml"})


def test_local_variant_has_no_lambda_and_no_registration_steps(local_definition):
    assert [(s["Name"], s["Type"]) for s in local_definition["Steps"]] == [
        (spec.STEP_TRAIN, "Training"), (spec.STEP_EVALUATE, "Processing"), (spec.STEP_CHECK, "Condition"),
    ]
    check = local_definition["Steps"][2]["Arguments"]
    assert [(s["Name"], s["Type"]) for s in check["IfSteps"]] == [(spec.STEP_CHECK_TRANSFORM, "Condition")]
    assert [(s["Name"], s["Type"]) for s in check["ElseSteps"]] == [(spec.STEP_FAIL, "Fail")]
    transform = check["IfSteps"][0]
    assert "DependsOn" not in transform  # no Register to wait for
    assert [(s["Name"], s["Type"]) for s in transform["Arguments"]["IfSteps"]] == [
        (spec.STEP_TRANSFORM_MODEL, "Model"), (spec.STEP_TRANSFORM, "Transform"),
    ]
    steps = steps_by_name(local_definition)
    assert set(steps) == set(LOCAL_ONLY_STEPS)
    assert {s["Type"] for s in steps.values()} == {"Training", "Processing", "Condition", "Fail", "Model", "Transform"}
    assert "Lambda" not in json.dumps(local_definition) and "ModelPackage" not in json.dumps(local_definition)


def test_local_variant_parameters_run_everything_locally(local_definition, local_folder):
    root = f"file://{local_folder.resolve()}"
    parameters = {p["Name"]: p["DefaultValue"] for p in local_definition["Parameters"]}
    assert {name: parameters[name] for name in ("TrainingInstanceType", "EvaluationInstanceType", "TransformInstanceType")} == {
        "TrainingInstanceType": "local", "EvaluationInstanceType": "local", "TransformInstanceType": "local"}
    assert parameters["TrainingData"] == f"{root}/data/training/" and parameters["TestingData"] == f"{root}/data/testing/"
    assert parameters["PretrainedModel"] == f"{root}/pretrained/"
    assert parameters["TransformInput"] == ""
    # Nothing the local steps do not use (the champion, the registration and the deployment parameters).
    assert not {"MaxRegression", "ModelApprovalStatus", "EndpointName", "EndpointInstanceType", "EndpointMode"} & set(parameters)
    assert "s3://" not in json.dumps(local_definition)  # every location is a file:// one under the folder
    args = steps_by_name(local_definition)[spec.STEP_TRAIN]["Arguments"]
    assert args["OutputDataConfig"]["S3OutputPath"] == f"{root}/models"
    assert args["AlgorithmSpecification"]["TrainingImage"] == LOCAL_TRAIN_IMAGE
    assert "ContainerEntrypoint" not in args["AlgorithmSpecification"]  # the image's own: `detector train`


def test_local_variant_trains_from_the_pretrained_channel_or_from_pretrained_weights(local_definition, tmp_path):
    args = steps_by_name(local_definition)[spec.STEP_TRAIN]["Arguments"]
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"]) for c in args["InputDataConfig"]] == [
        ("training", {"Get": "Parameters.TrainingData"}), ("testing", {"Get": "Parameters.TestingData"}),
        ("pretrained", {"Get": "Parameters.PretrainedModel"}),
    ]
    # Without `weights`, training starts from the `pretrained` channel (detector.training.weights).
    assert "weights" not in args["HyperParameters"]
    assert "PretrainedWeights" not in {p["Name"] for p in local_definition["Parameters"]}
    assert args["HyperParameters"]["model"] == "detector/faster_rcnn_R_18_FPN_128px.yaml"

    plain = build_local_definition(tmp_path)
    args = steps_by_name(plain)[spec.STEP_TRAIN]["Arguments"]
    assert [c["ChannelName"] for c in args["InputDataConfig"]] == ["training", "testing"]
    assert args["HyperParameters"]["weights"] == {"Get": "Parameters.PretrainedWeights"}
    assert "PretrainedModel" not in {p["Name"] for p in plain["Parameters"]}


def test_local_variant_evaluates_without_a_champion_and_shares_the_gate(local_definition, definition):
    local, full = steps_by_name(local_definition), steps_by_name(definition)
    evaluate = local[spec.STEP_EVALUATE]
    app = evaluate["Arguments"]["AppSpecification"]
    assert app["ContainerEntrypoint"] == ["detector", "evaluate"]
    # No --champion (detector evaluate then writes champion.arn "none" and a bar of 0); the archive is named
    # because local mode mounts the folder of model.tar.gz, where output.tar.gz lies too.
    assert app["ContainerArguments"] == ["--model", "/opt/ml/processing/model/model.tar.gz"]
    assert [i["InputName"] for i in evaluate["Arguments"]["ProcessingInputs"]] == ["model", "test"]
    assert evaluate["PropertyFiles"] == full[spec.STEP_EVALUATE]["PropertyFiles"]
    # The same builders as the SageMaker pipeline: the same gate, Fail message, metrics and Transform steps.
    assert local[spec.STEP_CHECK]["Arguments"]["Conditions"] == full[spec.STEP_CHECK]["Arguments"]["Conditions"]
    assert local[spec.STEP_FAIL] == full[spec.STEP_FAIL]
    assert (local[spec.STEP_TRAIN]["Arguments"]["AlgorithmSpecification"]["MetricDefinitions"]
            == full[spec.STEP_TRAIN]["Arguments"]["AlgorithmSpecification"]["MetricDefinitions"])
    assert local[spec.STEP_CHECK_TRANSFORM]["Arguments"]["Conditions"] == full[spec.STEP_CHECK_TRANSFORM]["Arguments"]["Conditions"]
    assert local[spec.STEP_TRANSFORM_MODEL]["Arguments"]["PrimaryContainer"] == {
        **full[spec.STEP_TRANSFORM_MODEL]["Arguments"]["PrimaryContainer"], "Image": LOCAL_SERVE_IMAGE}
    local_transform = {k: v for k, v in local[spec.STEP_TRANSFORM]["Arguments"].items() if k != "TransformOutput"}
    assert local_transform == {k: v for k, v in full[spec.STEP_TRANSFORM]["Arguments"].items() if k != "TransformOutput"}


def test_local_variant_settings_are_checked():
    from pipeline.definition import LocalPipelineSettings

    with pytest.raises(PipelineConfigError, match="train image '' is not valid"):
        LocalPipelineSettings("", LOCAL_SERVE_IMAGE, Path("runs"))
    with pytest.raises(PipelineConfigError, match="hyperparameters must map strings to strings"):
        LocalPipelineSettings(LOCAL_TRAIN_IMAGE, LOCAL_SERVE_IMAGE, Path("runs"), hyperparameters={"max_iter": 3})
