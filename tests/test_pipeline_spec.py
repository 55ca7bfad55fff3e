import ast
import dataclasses
import re
from pathlib import Path

import pytest

from detector import pipeline_spec
from detector.training.hyperparameters import Hyperparameters
from detector.pipeline_spec import PipelineParameterError, parse_overrides

REQUIRED = (
    "TrainingInstanceType", "TrainingInstanceCount", "NumEpoch", "LearningRate", "MaxIter",
    "s3Path", "EndpointInstanceType", "MinTestingAP", "ModelApprovalStatus",
)


def test_declares_the_parameters_the_pipeline_needs():
    names = [p.name for p in pipeline_spec.PARAMETERS]
    assert set(REQUIRED) <= set(names)
    assert len(names) == len(set(names))
    assert pipeline_spec.BY_NAME["MinTestingAP"].default == 0.5


def test_every_parameter_is_typed_described_and_its_default_parses():
    for p in pipeline_spec.PARAMETERS:
        assert p.type in ("String", "Integer", "Float"), p
        assert p.description.endswith("."), p
        default = p.default_for("s3://bucket/prefix")
        assert p.parse(str(default)) == default


def test_hyperparameters_are_real_training_hyperparameters():
    known = {f.name for f in dataclasses.fields(Hyperparameters)}
    mapped = [p.hyperparameter for p in pipeline_spec.PARAMETERS if p.hyperparameter]
    assert set(mapped) == {"num_epochs", "learning_rate", "max_iter", "weights"}
    assert set(mapped) <= known
    # The values the pipeline passes (strings) are accepted by the training image's parser.
    Hyperparameters.from_strings({p.hyperparameter: str(p.default) for p in pipeline_spec.PARAMETERS if p.hyperparameter})


def test_root_placeholder_is_filled_in():
    values = pipeline_spec.defaults("s3://bucket/detector/")
    assert values["s3Path"] == "s3://bucket/detector/checkpoints"
    # Channel prefixes end with '/': data/training must not also pick up data/training-old/.
    assert (values["TrainingData"], values["TestingData"]) == ("s3://bucket/detector/data/training/", "s3://bucket/detector/data/testing/")


def test_champion_bar_and_messages():
    assert pipeline_spec.champion_bar(None, 0.1) == 0.0  # no champion: the absolute bar alone decides
    assert pipeline_spec.champion_bar(0.6, 0.05) == 0.55
    assert pipeline_spec.champion_bar(0.02, 0.05) == 0.0
    assert pipeline_spec.champion_bar_path() == "champion.bar.testing_ap"
    assert pipeline_spec.champion_metric_path() == "metrics.champion_testing_ap.value"
    message = pipeline_spec.champion_fail_message(0.5, 0.6, 0.0, 0.6, "arn:x")
    assert message == "Model not registered: testing_ap 0.5 is below the champion's testing_ap 0.6 minus MaxRegression 0.0 = bar 0.6 ; champion arn:x"


def test_metric_regexes_capture_the_lines_training_prints():
    from io import StringIO

    from detector.evaluation.metrics import CocoMetrics, print_metric_lines

    out = StringIO()
    metrics = CocoMetrics(0.625, 0.9, 0.7, None, None, None, {}, 4, 10)
    print_metric_lines("training", metrics, out)
    print_metric_lines("testing", metrics, out)
    for name, regex in pipeline_spec.METRIC_DEFINITIONS:
        assert float(re.search(regex, out.getvalue()).group(1)) == 0.625, name


def test_overrides_are_typed():
    assert parse_overrides(["MaxIter=300", "LearningRate=0.01", "EndpointName=a=b"]) == {
        "MaxIter": 300, "LearningRate": 0.01, "EndpointName": "a=b",
    }
    assert parse_overrides({"TrainingInstanceCount": "2"}) == {"TrainingInstanceCount": 2}


@pytest.mark.parametrize(
    "item, message",
    [
        ("MaxIters=3", "unknown parameter 'MaxIters'; expected one of: TrainingInstanceType"),
        ("MaxIter=3.5", "parameter MaxIter='3.5': expected a whole number"),
        ("LearningRate=fast", "parameter LearningRate='fast': expected a number"),
        ("MinTestingAP=50", "parameter MinTestingAP='50': must be at most 1"),
        ("TrainingInstanceCount=0", "must be at least 1"),
        ("ModelApprovalStatus=approved", "expected one of Approved, PendingManualApproval, Rejected"),
        ("EndpointName=", "EndpointName: expected a non-empty string"),
        ("MaxIter", "expected Name=Value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(item, message):
    with pytest.raises(PipelineParameterError, match=re.escape(message)):
        parse_overrides([item])


def test_does_not_import_the_sdk():
    source = Path(pipeline_spec.__file__).read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not imported & {"sagemaker", "boto3", "botocore", "moto"}


def test_every_parameter_is_documented_with_its_default():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "pipeline.md").read_text()
    for p in pipeline_spec.PARAMETERS:
        default = str(p.default).replace("{root}", "<root>")
        assert f"| `{p.name}` | {p.type} | `{default}` |" in docs, p.name


@pytest.mark.parametrize(
    "model, metric",
    [
        (None, "testing_ap"),
        ("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "testing_ap"),
        ("detector/faster_rcnn_R_18_FPN_128px.yaml", "testing_ap"),
        ("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "testing_mask_ap"),
        ("detector/mask_rcnn_R_18_FPN_128px.yaml", "testing_mask_ap"),
        ("/configs/my_mask_rcnn.yaml", "testing_mask_ap"),
    ],
)
def test_the_gate_metric_follows_the_model(model, metric):
    assert pipeline_spec.gate_metric_for(model) == metric
    assert pipeline_spec.gate_metric_path(metric) == f"metrics.{metric}.value"


def test_the_fail_message_names_the_gate_metric():
    assert pipeline_spec.fail_message(0.41, 0.5) == "Model not registered: testing_ap 0.41 is below MinTestingAP 0.5"
    assert pipeline_spec.fail_message(0.41, 0.5, "testing_mask_ap") == "Model not registered: testing_mask_ap 0.41 is below MinTestingAP 0.5"
    with pytest.raises(pipeline_spec.PipelineParameterError, match="gate metric 'ap'"):
        pipeline_spec.gate_metric_path("ap")
