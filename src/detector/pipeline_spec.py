"""The pipeline's parameters and fixed names, described without the SageMaker SDK.

The SageMaker definition (``pipeline/``) and a local runner both read this module; the container
images never install the SDK, so nothing here may import it. Parameter types are SageMaker's own
(``String``, ``Integer``, ``Float``). String defaults may hold ``{root}``: the storage root of a
deployment (``s3://bucket/prefix`` on SageMaker, a directory locally).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from .errors import DetectorError

Value = Union[str, int, float]

STRING, INTEGER, FLOAT = "String", "Integer", "Float"


class PipelineParameterError(DetectorError):
    """A pipeline parameter override has an unknown name or a value of the wrong type."""


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Value
    description: str
    # The training hyperparameter this parameter is passed to (as a string), if any.
    hyperparameter: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # An empty string is a value of its own (for example "skip this step"), not a missing one.
    optional: bool = False

    def default_for(self, root: str) -> Value:
        return self.default.format(root=root.rstrip("/")) if isinstance(self.default, str) else self.default

    def parse(self, text: str) -> Value:
        """The typed value of an override given as text; PipelineParameterError names what is wrong."""
        value: Value
        try:
            if self.type == INTEGER:
                number = float(text)
                if not number.is_integer():
                    raise ValueError
                value = int(number)
            elif self.type == FLOAT:
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError
            else:
                value = text
        except ValueError:
            expected = "a whole number" if self.type == INTEGER else "a number"
            raise PipelineParameterError(f"parameter {self.name}={text!r}: expected {expected}") from None
        if self.type == STRING and not value and not self.optional:
            raise PipelineParameterError(f"parameter {self.name}: expected a non-empty string")
        if self.choices and value not in self.choices:
            raise PipelineParameterError(f"parameter {self.name}={text!r}: expected one of {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise PipelineParameterError(f"parameter {self.name}={text!r}: must be at least {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise PipelineParameterError(f"parameter {self.name}={text!r}: must be at most {self.maximum:g}")
        return value


APPROVAL_STATUSES = ("Approved", "PendingManualApproval", "Rejected")

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("TrainingInstanceType", STRING, "ml.g5.2xlarge", "Instance type of the training job (one GPU per process)."),
    Parameter("TrainingInstanceCount", INTEGER, 1, "Number of training instances; more than one trains with torch.distributed.", minimum=1),
    Parameter("NumEpoch", FLOAT, 12.0, "Passes over the training channel; training stops at NumEpoch or MaxIter, whichever comes first.",
              hyperparameter="num_epochs", minimum=0.001),
    Parameter("LearningRate", FLOAT, 0.005, "Base learning rate of the detectron2 solver (set for fine-tuning from PretrainedWeights).",
              hyperparameter="learning_rate", minimum=1e-9),
    Parameter("MaxIter", INTEGER, 90000, "Upper bound on training iterations (batches).", hyperparameter="max_iter", minimum=1),
    Parameter("PretrainedWeights", STRING, "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
              "Where training starts (hyperparameter weights): a model-zoo config name (its COCO-trained checkpoint), an s3:// or "
              "https:// file or model.tar.gz, a detectron2:// path, none (from scratch) or default (the model config's own weights).",
              hyperparameter="weights"),
    Parameter("s3Path", STRING, "{root}/checkpoints",
              "Checkpoint root; each execution checkpoints to <s3Path>/<execution id>, so a Spot restart resumes and a new run starts fresh."),
    # Prefixes end with '/': s3://b/data/training would also match s3://b/data/training-old/.
    Parameter("TrainingData", STRING, "{root}/data/training/", "COCO training channel (a prefix with one annotation json and the images)."),
    Parameter("TestingData", STRING, "{root}/data/testing/", "COCO testing channel, used during training and by the evaluation step."),
    Parameter("EvaluationInstanceType", STRING, "ml.g5.xlarge", "Instance type of the evaluation processing job."),
    Parameter("MinTestingAP", FLOAT, 0.5, "Gate: the model is registered and deployed only if testing_ap (COCO AP, 0..1) is at least this.",
              minimum=0.0, maximum=1.0),
    Parameter("MaxRegression", FLOAT, 0.0,
              "Gate: testing_ap must also be at least the champion's (the model the endpoint serves, else the newest Approved package) "
              "minus this; a first model with no champion passes on MinTestingAP alone.", minimum=0.0, maximum=1.0),
    Parameter("ModelApprovalStatus", STRING, "Approved",
              "Approval status of the registered model package; the deploy step only deploys Approved packages.", choices=APPROVAL_STATUSES),
    Parameter("EndpointName", STRING, "detector", "Endpoint to create, or to update in place when it exists."),
    Parameter("EndpointInstanceType", STRING, "ml.g5.xlarge", "Instance type of the endpoint (realtime and async modes)."),
    Parameter("EndpointMode", STRING, "realtime", "realtime, async (S3 in and out, large images, long requests) or serverless (CPU only).",
              choices=("realtime", "async", "serverless")),
    Parameter("EndpointMinInstances", INTEGER, 1, "Instances at start and the autoscaling minimum.", minimum=1),
    Parameter("EndpointMaxInstances", INTEGER, 1, "Autoscaling maximum (at least EndpointMinInstances).", minimum=1),
    Parameter("InvocationsPerInstance", FLOAT, 0.0,
              "Autoscaling target of SageMakerVariantInvocationsPerInstance (per minute); 0 turns autoscaling off.", minimum=0.0),
    Parameter("TrafficRouting", STRING, "ALL_AT_ONCE", "Blue/green traffic shifting of an update: ALL_AT_ONCE, CANARY or LINEAR.",
              choices=("ALL_AT_ONCE", "CANARY", "LINEAR")),
    Parameter("TrafficPercent", INTEGER, 10, "Canary size or linear step, in % of the new fleet's capacity.", minimum=1, maximum=99),
    Parameter("BakeTimeSeconds", INTEGER, 300, "Blue/green bake time per traffic step before the old fleet goes.", minimum=0, maximum=3600),
    Parameter("LatencyAlarmMs", INTEGER, 5000, "Roll an update back when the average model latency exceeds this (ms); 0: no latency alarm.",
              minimum=0),
    Parameter("DataCapturePercent", INTEGER, 0, "Share of requests captured (images and predictions) under <root>/data-capture/; 0: off.",
              minimum=0, maximum=100),
    Parameter("AsyncMaxConcurrentInvocations", INTEGER, 4, "Async mode: concurrent requests per instance.", minimum=1, maximum=1000),
    Parameter("AsyncSuccessTopic", STRING, "none", "Async mode: SNS topic ARN told of each result, or none."),
    Parameter("AsyncErrorTopic", STRING, "none", "Async mode: SNS topic ARN told of each failure, or none."),
    Parameter("ServerlessMemoryMB", INTEGER, 6144, "Serverless mode: memory, 1024 to 6144 in steps of 1024.", minimum=1024, maximum=6144),
    Parameter("ServerlessMaxConcurrency", INTEGER, 5, "Serverless mode: concurrent requests.", minimum=1, maximum=200),
)

# The optional Transform step after Register: skipped while TransformInput is empty.
TRANSFORM_PARAMETERS: tuple[Parameter, ...] = (
    Parameter("TransformInput", STRING, "",
              "Images to score with the registered model in a Batch Transform job after Register (an S3 prefix; locally a folder, "
              "a COCO channel, a JSON Lines file or 'testing'); empty skips the step.", optional=True),
    Parameter("TransformInstanceType", STRING, "ml.g5.xlarge", "Instance type of the Transform step's Batch Transform job."),
)
PARAMETERS = (*PARAMETERS, *TRANSFORM_PARAMETERS)

BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}

# Training: the metric lines `detector train` prints, captured by the training job's metric definitions.
METRIC_DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("training_ap", r"training_ap ([0-9\.]+)"),
    ("testing_ap", r"testing_ap ([0-9\.]+)"),
)
TRAINING_CHANNEL, TESTING_CHANNEL = "training", "testing"

# Evaluation: the processing step's output and the property file the gate reads.
EVALUATION_OUTPUT = "evaluation"
EVALUATION_FILE = "evaluation.json"
EVALUATION_PLOT = "evaluation.png"


def metric_path(name: str) -> str:
    """The JsonGet path of a metric in evaluation.json."""
    return f"metrics.{name}.value"


# The gate's default metric (box AP); every gate path and message below derives from a metric name.
GATE_METRIC = "testing_ap"
TESTING_AP_PATH = metric_path(GATE_METRIC)
# The champion (the model in service) is scored by the same evaluation step: its metrics are the
# challenger's names with this prefix (champion_testing_ap), and the "champion" section holds its ARN
# and, per metric, the bar the challenger must reach (champion's value minus MaxRegression; 0 with no champion).
CHAMPION = "champion"
CHAMPION_PREFIX = "champion_"
NO_CHAMPION = "none"


def champion_metric_path(metric: str = GATE_METRIC) -> str:
    return metric_path(CHAMPION_PREFIX + metric)


def champion_bar_path(metric: str = GATE_METRIC) -> str:
    return f"{CHAMPION}.bar.{metric}"


def champion_bar(champion_value: float | None, max_regression: float) -> float:
    """What the challenger must reach on a metric: the champion's value minus MaxRegression (at least 0)."""
    return 0.0 if champion_value is None else max(0.0, round(champion_value - max_regression, 6))

# Registration: the package's customer metadata key holding the approval status it was registered with.
REGISTERED_AS = "RegisteredAs"

# The gate: which metric of evaluation.json the condition compares with MinTestingAP. Box AP by
# default; mask AP for a mask model (a `model` hyperparameter naming Mask R-CNN).
GATE_METRICS = ("testing_ap", "testing_mask_ap")
DEFAULT_GATE_METRIC = GATE_METRIC
MASK_METRIC_DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("training_mask_ap", r"training_mask_ap ([0-9\.]+)"),
    ("testing_mask_ap", r"testing_mask_ap ([0-9\.]+)"),
)


def gate_metric_path(metric: str) -> str:
    """The ``JsonGet`` path of a gate metric in evaluation.json."""
    if metric not in GATE_METRICS:
        raise PipelineParameterError(f"gate metric {metric!r}: expected one of {', '.join(GATE_METRICS)}")
    return f"metrics.{metric}.value"


def is_mask_model(model: str | None) -> bool:
    """Whether a ``model`` hyperparameter names a Mask R-CNN config (model-zoo or packaged), by its name."""
    name = (model or "").lower()
    return name.startswith("coco-instancesegmentation/") or "mask_rcnn" in name.rsplit("/", 1)[-1]


def gate_metric_for(model: str | None) -> str:
    """The default gate metric for a ``model`` hyperparameter: mask AP for mask models, else box AP."""
    return "testing_mask_ap" if is_mask_model(model) else DEFAULT_GATE_METRIC


def fail_message_parts(metric: str = DEFAULT_GATE_METRIC) -> tuple[str, str]:
    """The Fail step's message around the measured metric and the threshold."""
    return (f"Model not registered: {metric}", "is below MinTestingAP")

# Registration: what the serving image accepts and answers.
CONTENT_TYPES = ("image/jpeg", "image/png", "application/json", "application/x-npy")
RESPONSE_TYPES = ("application/json",)

# Step names, in execution order (a fail step runs instead of the rest when a gate test fails).
STEP_TRAIN = "Train"
STEP_FIND_CHAMPION = "FindChampion"
STEP_EVALUATE = "Evaluate"
STEP_CHECK = "CheckTestingAP"
STEP_FAIL = "TestingAPTooLow"
STEP_CHECK_CHAMPION = "CheckChampion"
STEP_CHAMPION_FAIL = "WorseThanChampion"
STEP_REGISTER = "Register"
STEP_DEPLOY = "Deploy"
# The optional Transform step (after Register, while TransformInput is not empty) and its parts.
STEP_CHECK_TRANSFORM = "CheckTransformInput"
STEP_TRANSFORM_MODEL = "TransformModel"
STEP_TRANSFORM = "Transform"
TRANSFORM_OUTPUT = "transform"  # {root}/transform/<execution id>/ on SageMaker, the step's folder locally

# The Fail steps' messages: these parts joined with spaces around the numbers.
FAIL_MESSAGE_PARTS = fail_message_parts(DEFAULT_GATE_METRIC)


def champion_fail_message_parts(metric: str = DEFAULT_GATE_METRIC) -> tuple[str, ...]:
    """The champion test's Fail message around the challenger's value, the champion's, MaxRegression, the bar and the champion's ARN."""
    return (f"Model not registered: {metric}", f"is below the champion's {metric}", "minus MaxRegression", "= bar", "; champion")


CHAMPION_FAIL_MESSAGE_PARTS = champion_fail_message_parts(DEFAULT_GATE_METRIC)


def fail_message(testing_ap: float, threshold: float, metric: str = DEFAULT_GATE_METRIC) -> str:
    """The absolute test's Fail message as the local runner prints it."""
    first, second = fail_message_parts(metric)
    return f"{first} {testing_ap} {second} {threshold}"


def champion_fail_message(
    testing_ap: float, champion_ap: float, max_regression: float, bar: float, champion_arn: str, metric: str = DEFAULT_GATE_METRIC
) -> str:
    """The champion test's Fail message as the local runner prints it (the pipeline's Join gives the same words)."""
    parts = champion_fail_message_parts(metric)
    return f"{parts[0]} {testing_ap} {parts[1]} {champion_ap} {parts[2]} {max_regression} {parts[3]} {bar} {parts[4]} {champion_arn}"


def defaults(root: str) -> dict[str, Value]:
    return {p.name: p.default_for(root) for p in PARAMETERS}


def parse_overrides(items: Iterable[str] | Mapping[str, str]) -> dict[str, Value]:
    """``Name=Value`` strings (or a mapping) as typed values, checked against :data:`PARAMETERS`."""
    pairs: list[tuple[str, str]] = []
    if isinstance(items, Mapping):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        for item in items:
            name, sep, text = item.partition("=")
            if not sep or not name.strip():
                raise PipelineParameterError(f"parameter override {item!r}: expected Name=Value")
            pairs.append((name.strip(), text))
    values: dict[str, Value] = {}
    for name, text in pairs:
        parameter = BY_NAME.get(name)
        if parameter is None:
            raise PipelineParameterError(f"unknown parameter {name!r}; expected one of: {', '.join(BY_NAME)}")
        values[name] = parameter.parse(text)
    return values
