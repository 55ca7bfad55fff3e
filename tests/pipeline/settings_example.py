"""Deployment settings used across the pipeline tests (made-up account, nothing real)."""

ACCOUNT = "111122223333"
REGION = "us-east-1"
TRAIN_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/detector-train:1.0"
SERVE_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/detector-serve:1.0"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/DetectorSageMaker"
BUCKET = "detector-test-bucket"
LAMBDA_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:detector-deploy"

CLI_ARGS = [
    "--region", REGION, "--train-image", TRAIN_IMAGE, "--serve-image", SERVE_IMAGE, "--role", ROLE,
    "--bucket", BUCKET, "--deploy-lambda-arn", LAMBDA_ARN,
]


def settings(**overrides):
    from pipeline.settings import PipelineSettings

    values = dict(
        train_image=TRAIN_IMAGE, serve_image=SERVE_IMAGE, role=ROLE, bucket=BUCKET,
        deploy_lambda_arn=LAMBDA_ARN, region=REGION,
    )
    values.update(overrides)
    return PipelineSettings(**values)
