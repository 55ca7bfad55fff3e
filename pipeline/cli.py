"""``python -m pipeline <command>``: print, upsert, start and watch the pipeline; install the deploy Lambda.

Every option has an environment-variable default (shown in ``--help``). AWS errors are reported in
one line and exit with status 1; bad options exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from detector.errors import DetectorError

ENV = {
    "name": "DETECTOR_PIPELINE_NAME",
    "region": "AWS_REGION",
    "train_image": "DETECTOR_TRAIN_IMAGE",
    "serve_image": "DETECTOR_SERVE_IMAGE",
    "role": "DETECTOR_ROLE_ARN",
    "bucket": "DETECTOR_BUCKET",
    "prefix": "DETECTOR_PREFIX",
    "deploy_lambda_arn": "DETECTOR_DEPLOY_LAMBDA_ARN",
    "lambda_role": "DETECTOR_DEPLOY_LAMBDA_ROLE_ARN",
    "function_name": "DETECTOR_DEPLOY_LAMBDA_NAME",
}
DEFAULTS = {"name": "detector", "prefix": "detector", "function_name": "detector-deploy"}


class UsageError(DetectorError):
    pass


def _option(parser, flag: str, help: str, **kwargs) -> None:
    dest = flag.lstrip("-").replace("-", "_")
    variable = ENV.get(dest)
    default = (os.environ.get(variable) if variable else None) or DEFAULTS.get(dest)
    if dest == "region":
        default = default or os.environ.get("AWS_DEFAULT_REGION")
        variable = "AWS_REGION or AWS_DEFAULT_REGION"
    suffix = f" (env {variable})" if variable else ""
    parser.add_argument(flag, default=default, help=help + suffix, **kwargs)


def _common(parser) -> None:
    _option(parser, "--name", "pipeline name, default detector")
    _option(parser, "--region", "AWS region")


def _definition_options(parser) -> None:
    _option(parser, "--train-image", "training image URI (also runs the evaluation step)")
    _option(parser, "--serve-image", "serving image URI of the registered model")
    _option(parser, "--role", "SageMaker execution role ARN for the jobs, the model and the pipeline")
    _option(parser, "--bucket", "S3 bucket for data, checkpoints, models and evaluation reports")
    _option(parser, "--prefix", "key prefix in the bucket, default detector")
    _option(parser, "--deploy-lambda-arn", "ARN of the deploy function (`deploy-lambda` prints it)")
    parser.add_argument("--model-package-group", default="detector", help="model package group to register into")
    parser.add_argument("--max-run", type=int, default=24 * 3600, help="training MaxRuntimeInSeconds (default 86400)")
    parser.add_argument("--max-wait", type=int, default=48 * 3600,
                        help="Spot MaxWaitTimeInSeconds, greater than --max-run (default 172800)")
    parser.add_argument("--hyperparameter", action="append", default=[], metavar="NAME=VALUE",
                        help="fixed training hyperparameter, e.g. model=COCO-Detection/retinanet_R_50_FPN_3x.yaml (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    definition = sub.add_parser("definition", help="print the pipeline definition JSON (offline: no credentials, no network)")
    _common(definition)
    _definition_options(definition)

    upsert = sub.add_parser("upsert", help="create the pipeline or update it in place")
    _common(upsert)
    _definition_options(upsert)
    upsert.add_argument("--description", default="Train, evaluate, gate on AP, register and deploy a Detectron2 detector")

    start = sub.add_parser("start", help="start an execution; prints its ARN")
    _common(start)
    start.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="parameter override (repeatable)")
    start.add_argument("--display-name", default=None, help="execution display name")

    status = sub.add_parser("status", help="an execution's state and its steps (default: the latest execution)")
    _common(status)
    status.add_argument("execution_arn", nargs="?", help="execution ARN (default: the latest one)")

    deploy_lambda = sub.add_parser("deploy-lambda", help="create or update the deploy Lambda function; prints its ARN")
    _option(deploy_lambda, "--region", "AWS region")
    _option(deploy_lambda, "--function-name", "function name, default detector-deploy")
    _option(deploy_lambda, "--lambda-role", "execution role ARN of the function (see README.md, Permissions for its permissions)")
    return parser


def _require(args, *names: str) -> None:
    for name in names:
        if not getattr(args, name):
            variable = ENV.get(name)
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} is required" + (f" (or set {variable})" if variable else ""))


def _pairs(items: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: expected NAME=VALUE")
        pairs[key] = value
    return pairs


def _settings(args):
    from .settings import PipelineSettings

    _require(args, "train_image", "serve_image", "role", "bucket", "deploy_lambda_arn", "region")
    return PipelineSettings(
        train_image=args.train_image,
        serve_image=args.serve_image,
        role=args.role,
        bucket=args.bucket,
        deploy_lambda_arn=args.deploy_lambda_arn,
        region=args.region,
        prefix=args.prefix,
        pipeline_name=args.name,
        model_package_group=args.model_package_group,
        max_run_s=args.max_run,
        max_wait_s=args.max_wait,
        hyperparameters=_pairs(args.hyperparameter, "--hyperparameter"),
    )


def _client(service: str, region: str):
    import boto3

    return boto3.Session(region_name=region).client(service)


def run(args) -> int:
    from . import control

    if args.command == "definition":
        from .definition import pipeline_definition

        print(json.dumps(json.loads(pipeline_definition(_settings(args))), indent=2))
    elif args.command == "upsert":
        from .definition import pipeline_definition

        settings = _settings(args)
        definition = pipeline_definition(settings)
        client = _client("sagemaker", args.region)
        if control.ensure_model_package_group(client, settings.model_package_group):
            print(f"created model package group {settings.model_package_group}")
        action, arn = control.upsert_pipeline(client, args.name, definition, settings.role, args.description)
        print(f"{action} {arn}")
    elif args.command == "start":
        from detector.pipeline_spec import parse_overrides

        _require(args, "region")
        overrides = parse_overrides(args.param)  # checked before anything is sent
        print(control.start_execution(_client("sagemaker", args.region), args.name, overrides, args.display_name))
    elif args.command == "status":
        _require(args, "region")
        client = _client("sagemaker", args.region)
        arn = args.execution_arn or control.latest_execution(client, args.name)
        execution, steps = control.execution_status(client, arn)
        print(f"{arn}  {execution.get('PipelineExecutionStatus', '?')}")
        if execution.get("FailureReason"):
            print(f"  reason: {execution['FailureReason']}")
        for step in steps:
            print(f"  {step.name:<16} {step.status:<10} {step.detail}".rstrip())
    elif args.command == "deploy-lambda":
        _require(args, "region", "function_name", "lambda_role")
        action, arn = control.upsert_deploy_lambda(_client("lambda", args.region), args.function_name, args.lambda_role)
        print(f"{action} {arn}")
    return 0


def describe_error(error: BaseException) -> str | None:
    """One line for errors a user can act on; None for anything else (a bug: let it raise)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    if isinstance(error, DetectorError):
        return str(error)
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"AWS {error.operation_name} failed: {info.get('Code', '?')}: {info.get('Message', error)}"
    if isinstance(error, NoCredentialsError):
        return "no AWS credentials found: configure them (aws configure, aws sso login, or AWS_PROFILE) and retry"
    if isinstance(error, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(error, BotoCoreError):
        return f"AWS request failed: {error}"
    if isinstance(error, LookupError):
        return str(error.args[0]) if error.args else str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Exception as error:
        message = describe_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
