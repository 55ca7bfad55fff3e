"""What a deployment of the pipeline needs to know, checked before the SDK is touched."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from detector.errors import DetectorError

MAX_RUN_LIMIT_S = 28 * 24 * 3600  # SageMaker's upper bound on MaxRuntimeInSeconds

_IMAGE = re.compile(r"^[a-z0-9][a-z0-9.\-]*(:[0-9]+)?(/[a-z0-9._\-]+)+(:[A-Za-z0-9._\-]+|@sha256:[0-9a-f]{64})?$")
_ROLE = re.compile(r"^arn:aws[a-z\-]*:iam::[0-9]{12}:role/[\w+=,.@/\-]+$")
_LAMBDA = re.compile(r"^arn:aws[a-z\-]*:lambda:[a-z0-9\-]+:[0-9]{12}:function:[A-Za-z0-9_\-]+(:[A-Za-z0-9_$\-]+)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,255}$")


class PipelineConfigError(DetectorError):
    """A setting of the pipeline deployment (image, role, bucket, Spot times) is unusable."""


@dataclass(frozen=True)
class PipelineSettings:
    train_image: str
    serve_image: str
    role: str
    bucket: str
    deploy_lambda_arn: str
    region: str
    prefix: str = "detector"
    pipeline_name: str = "detector"
    model_package_group: str = "detector"
    max_run_s: int = 24 * 3600
    max_wait_s: int = 48 * 3600
    training_volume_gb: int = 100
    evaluation_max_run_s: int = 3600
    # Static training hyperparameters (strings) added to those the pipeline parameters set, e.g. {"model": ...}.
    hyperparameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = (
            ("train image", self.train_image, _IMAGE, "an image URI like 123456789012.dkr.ecr.us-east-1.amazonaws.com/detector-train:1.0"),
            ("serve image", self.serve_image, _IMAGE, "an image URI like 123456789012.dkr.ecr.us-east-1.amazonaws.com/detector-serve:1.0"),
            ("role", self.role, _ROLE, "an IAM role ARN like arn:aws:iam::123456789012:role/SageMakerExecution"),
            ("deploy Lambda ARN", self.deploy_lambda_arn, _LAMBDA,
             "a Lambda function ARN like arn:aws:lambda:us-east-1:123456789012:function:detector-deploy (see `python -m pipeline deploy-lambda`)"),
            ("bucket", self.bucket, _BUCKET, "an S3 bucket name (no s3:// and no prefix)"),
            ("region", self.region, _REGION, "an AWS region like us-east-1"),
            ("pipeline name", self.pipeline_name, _NAME, "letters, digits and hyphens, at most 256 characters"),
            ("model package group", self.model_package_group, _NAME, "letters, digits and hyphens"),
        )
        for what, value, pattern, expected in checks:
            if not isinstance(value, str) or not pattern.match(value):
                raise PipelineConfigError(f"{what} {value!r} is not valid: expected {expected}")
        if self.prefix.startswith("/") or self.prefix.endswith("/") or "//" in self.prefix:
            raise PipelineConfigError(f"prefix {self.prefix!r}: expected an S3 key prefix without leading or trailing '/'")
        if not 0 < self.max_run_s <= MAX_RUN_LIMIT_S:
            raise PipelineConfigError(f"max_run {self.max_run_s} s: expected 1 to {MAX_RUN_LIMIT_S} s (28 days)")
        if self.max_wait_s <= self.max_run_s:
            raise PipelineConfigError(
                f"max_wait {self.max_wait_s} s must be greater than max_run {self.max_run_s} s: managed Spot training "
                "waits for capacity and restarts within max_wait, and runs for at most max_run"
            )
        bad = {k: v for k, v in self.hyperparameters.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise PipelineConfigError(f"hyperparameters must map strings to strings (SageMaker's contract), got {bad}")

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
