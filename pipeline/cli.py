"""``python -m pipeline <command>``: print, upsert, start and watch the pipeline; install the deploy Lambda; approve and deploy.

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


class DeployRefused(DetectorError):
    """The deployment cannot go ahead (the endpoint's state, the settings)."""


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

    deploy_lambda = sub.add_parser(
        "deploy-lambda",
        help="create or update the deploy Lambda function and its approval rule; prints the published version's ARN",
    )
    _option(deploy_lambda, "--region", "AWS region")
    _option(deploy_lambda, "--function-name", "function name, default detector-deploy")
    _option(deploy_lambda, "--lambda-role", "execution role ARN of the function (see docs/pipeline.md, Permissions)")
    _option(deploy_lambda, "--role", "SageMaker execution role ARN the deployed models run with")
    _deploy_settings_options(deploy_lambda)

    approve = sub.add_parser("approve", help="approve a model package; the approval rule then deploys it")
    _option(approve, "--region", "AWS region")
    approve.add_argument("package_arn", help="model package ARN")
    approve.add_argument("--description", default="", help="approval description")

    deploy = sub.add_parser("deploy", help="deploy a model package now, with the deploy function's settings (no Lambda invocation)")
    _option(deploy, "--region", "AWS region")
    _option(deploy, "--function-name", "deploy function whose settings apply, default detector-deploy")
    deploy.add_argument("package_arn", help="model package ARN (it must be Approved)")
    deploy.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="override one deploy setting, e.g. endpoint_mode=serverless (repeatable)")
    deploy.add_argument("--wait", action="store_true", help="wait until the endpoint is InService, then register autoscaling")
    return parser


def _deploy_settings_options(parser) -> None:
    parser.add_argument("--model-package-group", default="detector", help="group whose approvals are deployed (default detector)")
    parser.add_argument("--endpoint-name", default="detector", help="endpoint approved packages go to (default detector)")
    parser.add_argument("--instance-type", default="ml.g5.xlarge", help="endpoint instance type (default ml.g5.xlarge)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="another deploy setting for approved packages, e.g. endpoint_mode=async or max_instance_count=4 "
                             "(repeatable; the names are the Deploy step's inputs, see docs/pipeline.md)")


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
        if settings.deploy_lambda_arn.count(":") == 6:  # no version qualifier
            print(f"note: {settings.deploy_lambda_arn} names no version, so the pipeline invokes $LATEST; "
                  "pass the version ARN that `deploy-lambda` printed to pin what it runs", file=sys.stderr)
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
        _require(args, "region", "function_name", "lambda_role", "role")
        settings = {"endpoint_name": args.endpoint_name, "instance_type": args.instance_type, "role_arn": args.role,
                    **_pairs(args.setting, "--setting")}
        _check_deploy_settings(settings)
        lambda_client = _client("lambda", args.region)
        action, arn = control.upsert_deploy_lambda(lambda_client, args.function_name, args.lambda_role, deploy_settings=settings)
        print(f"{action} {arn}")
        rule = control.upsert_approval_rule(_client("events", args.region), lambda_client, arn, args.model_package_group)
        print(f"approval rule {rule}")
    elif args.command == "approve":
        _require(args, "region")
        before = control.approve_package(_client("sagemaker", args.region), args.package_arn, args.description)
        print(f"approved {args.package_arn} (was {before}); the approval rule deploys it")
    elif args.command == "deploy":
        _deploy_now(args)
    return 0


def _check_deploy_settings(settings: dict) -> None:
    from .endpoint_config import DeployError, DeploySettings

    unknown = sorted(set(settings) - set(DeploySettings.__dataclass_fields__))
    if unknown:
        raise UsageError(f"unknown deploy setting {', '.join(unknown)}; expected one of {', '.join(DeploySettings.__dataclass_fields__)}")
    try:
        DeploySettings.from_event(settings)
    except DeployError as e:
        raise UsageError(str(e)) from None


def _deploy_now(args) -> None:
    from . import deploy_handler

    _require(args, "region", "function_name")
    lambda_client = _client("lambda", args.region)
    settings = {**control_settings(lambda_client, args.function_name), **_pairs(args.setting, "--setting")}
    _check_deploy_settings(settings)
    clients = deploy_handler.Clients(
        _client("sagemaker", args.region), _client("cloudwatch", args.region), _client("application-autoscaling", args.region)
    )
    run_once = lambda: deploy_handler.deploy(clients, args.package_arn, deploy_handler.DeploySettings.from_event(settings))  # noqa: E731
    result = _deploy_call(run_once)
    print(json.dumps(result, indent=2, default=str))
    if args.wait and result.get("Action") in ("created", "updated", "in-progress"):
        name = result["EndpointName"]
        print(f"waiting for endpoint {name} to be InService ...", file=sys.stderr)
        clients.sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 30, "MaxAttempts": 120})
        print(json.dumps(_deploy_call(run_once), indent=2, default=str))


def _deploy_call(call) -> dict:
    from .endpoint_config import DeployError

    try:
        return call()
    except DeployError as e:
        raise DeployRefused(str(e)) from None


def control_settings(lambda_client, function_name: str) -> dict:
    """The deploy settings the function was installed with (``deploy-lambda``)."""
    from . import control

    configuration = lambda_client.get_function_configuration(FunctionName=function_name)
    text = configuration.get("Environment", {}).get("Variables", {}).get(control.SETTINGS_VARIABLE, "{}")
    return json.loads(text)


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
