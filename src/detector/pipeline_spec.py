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
    Parameter("TrainingData", STRING, "{root}/data/training", "COCO training channel (a prefix with one annotation json and the images)."),
    Parameter("TestingData", STRING, "{root}/data/testing", "COCO testing channel, used during training and by the evaluation step."),
    Parameter("EvaluationInstanceType", STRING, "ml.g5.xlarge", "Instance type of the evaluation processing job."),
    Parameter("MinTestingAP", FLOAT, 0.5, "Gate: the model is registered and deployed only if testing_ap (COCO AP, 0..1) is at least this.",
              minimum=0.0, maximum=1.0),
    Parameter("ModelApprovalStatus", STRING, "Approved",
              "Approval status of the registered model package; the deploy step only deploys Approved packages.", choices=APPROVAL_STATUSES),
    Parameter("EndpointName", STRING, "detector", "Endpoint to create, or to update in place when it exists."),
    Parameter("EndpointInstanceType", STRING, "ml.g5.xlarge", "Instance type of the endpoint."),
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
TESTING_AP_PATH = "metrics.testing_ap.value"

# The gate: which metric of evaluation.json the condition compares with MinTestingAP. Box AP by
# default; mask AP for a mask model (a `model` hyperparameter naming Mask R-CNN).
GATE_METRICS = ("testing_ap", "testing_mask_ap")
DEFAULT_GATE_METRIC = "testing_ap"
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

# Step names, in execution order (the fail step runs instead of the last two when the gate fails).
STEP_TRAIN = "Train"
STEP_EVALUATE = "Evaluate"
STEP_CHECK = "CheckTestingAP"
STEP_FAIL = "TestingAPTooLow"
STEP_REGISTER = "Register"
STEP_DEPLOY = "Deploy"
# The optional Transform step (after Register, while TransformInput is not empty) and its parts.
STEP_CHECK_TRANSFORM = "CheckTransformInput"
STEP_TRANSFORM_MODEL = "TransformModel"
STEP_TRANSFORM = "Transform"
TRANSFORM_OUTPUT = "transform"  # {root}/transform/<execution id>/ on SageMaker, the step's folder locally

# The Fail step's message: these parts joined with spaces around the measured AP and the threshold.
FAIL_MESSAGE_PARTS = fail_message_parts(DEFAULT_GATE_METRIC)


def fail_message(testing_ap: float, threshold: float, metric: str = DEFAULT_GATE_METRIC) -> str:
    """The Fail step's message as the local runner prints it."""
    first, second = fail_message_parts(metric)
    return f"{first} {testing_ap} {second} {threshold}"


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
