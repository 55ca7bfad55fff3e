"""Build the SageMaker Pipeline (SDK v3) fully offline.

Train (managed Spot, checkpoints per execution) -> FindChampion (the deploy Lambda: the package the endpoint
serves, else the newest Approved one) -> Evaluate (``detector evaluate`` in the training image, scoring the
new model and the champion on the same channel) -> CheckTestingAP (``metrics.testing_ap.value`` >=
MinTestingAP, else TestingAPTooLow) -> CheckChampion (testing_ap >= the champion's minus MaxRegression,
``champion.bar.testing_ap``, else WorseThanChampion) -> Register (serving image) -> Deploy (Lambda), and the
optional Transform step. The gate's metric is ``gate_metric`` (``testing_ap``, or ``testing_mask_ap`` by
default when the ``model`` hyperparameter names Mask R-CNN).

The SDK is imported and driven with a session holding placeholder credentials, role validation and
telemetry off, and every S3 location explicit, so building the definition sends nothing anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator

from detector import pipeline_spec as spec
from detector.environment import ProcessingEnvironment

from .settings import PipelineSettings

SDK_CONFIG = Path(__file__).with_name("sdk_config.yaml")
CONTAINER_ROOT = Path("/opt/ml")  # what SageMaker mounts in every container
_OFFLINE_ENV = {
    "SAGEMAKER_VALIDATE_ROLE": "false",
    "AWS_EC2_METADATA_DISABLED": "true",
    **{
        name: str(SDK_CONFIG)
        for name in (
            "SAGEMAKER_USER_CONFIG_OVERRIDE",
            "SAGEMAKER_ADMIN_CONFIG_OVERRIDE",
            "SAGEMAKER_CORE_USER_CONFIG_OVERRIDE",
            "SAGEMAKER_CORE_ADMIN_CONFIG_OVERRIDE",
        )
    },
}


@contextlib.contextmanager
def _offline_sdk(region: str) -> Iterator[None]:
    """Environment under which importing and driving the SDK makes no network call; restored afterwards."""
    changes = {**_OFFLINE_ENV, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION") or region}
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    # The SDK explains at INFO/WARNING level what it leaves out of a pipeline definition; not useful here.
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def get_pipeline(settings: PipelineSettings, gate_metric: str | None = None):
    """The ``sagemaker.mlops.workflow.pipeline.Pipeline`` for ``settings``; ``.definition()`` gives the JSON.

    ``gate_metric``: the evaluation metric the condition and the Fail message use (one of
    ``spec.GATE_METRICS``); by default the one for the ``model`` hyperparameter (``spec.gate_metric_for``)."""
    with _offline_sdk(settings.region):
        return _build(settings, gate_metric)


def pipeline_definition(settings: PipelineSettings, gate_metric: str | None = None) -> str:
    with _offline_sdk(settings.region):
        return _build(settings, gate_metric).definition()


def _build(settings: PipelineSettings, gate_metric: str | None = None):
    model = settings.hyperparameters.get("model")
    gate_metric = gate_metric or spec.gate_metric_for(model)
    spec.gate_metric_path(gate_metric)  # fails naming the choices, before the SDK is imported
    metric_definitions = spec.METRIC_DEFINITIONS + (spec.MASK_METRIC_DEFINITIONS if spec.is_mask_model(model) else ())

    import boto3
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (
        MetricDefinition,
        MetricsSource,
        ModelMetrics,
        ModelQuality,
        ProcessingInput,
        ProcessingOutput,
        ProcessingS3Input,
        ProcessingS3Output,
    )
    from sagemaker.core.training.configs import CheckpointConfig, Compute, InputData, OutputDataConfig, StoppingCondition
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaOutputTypeEnum, LambdaStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep, TrainingStep
    from sagemaker.train.model_trainer import ModelTrainer

    # Placeholder credentials: nothing built here may reach AWS (upsert/start use the caller's own session).
    boto_session = boto3.Session(aws_access_key_id="offline", aws_secret_access_key="offline", region_name=settings.region)
    session = PipelineSession(boto_session=boto_session, default_bucket=settings.bucket)
    root = settings.root
    execution_id = ExecutionVariables.PIPELINE_EXECUTION_ID

    kinds = {spec.STRING: ParameterString, spec.INTEGER: ParameterInteger, spec.FLOAT: ParameterFloat}
    params = {p.name: kinds[p.type](name=p.name, default_value=p.default_for(root)) for p in spec.PARAMETERS}

    hyperparameters = dict(settings.hyperparameters)
    for p in spec.PARAMETERS:
        if p.hyperparameter:
            hyperparameters[p.hyperparameter] = params[p.name].to_string()  # the API takes strings only
    trainer = ModelTrainer(
        training_image=settings.train_image,
        role=settings.role,
        sagemaker_session=session,
        base_job_name=f"{settings.pipeline_name}-train",
        compute=Compute(
            instance_type=params["TrainingInstanceType"],
            instance_count=params["TrainingInstanceCount"],
            volume_size_in_gb=settings.training_volume_gb,
            enable_managed_spot_training=True,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=settings.max_run_s, max_wait_time_in_seconds=settings.max_wait_s
        ),
        checkpoint_config=CheckpointConfig(
            s3_uri=Join(on="/", values=[params["s3Path"], execution_id]), local_path=str(CONTAINER_ROOT / "checkpoints")
        ),
        output_data_config=OutputDataConfig(s3_output_path=f"{root}/models"),
        hyperparameters=hyperparameters,
    ).with_metric_definitions([MetricDefinition(name=name, regex=regex) for name, regex in metric_definitions])
    train = TrainingStep(
        name=spec.STEP_TRAIN,
        step_args=trainer.train(
            input_data_config=[
                InputData(channel_name=spec.TRAINING_CHANNEL, data_source=params["TrainingData"]),
                InputData(channel_name=spec.TESTING_CHANNEL, data_source=params["TestingData"]),
            ]
        ),
    )
    model_artifact = train.properties.ModelArtifacts.S3ModelArtifacts

    lambda_function = Lambda(function_arn=settings.deploy_lambda_arn, session=session)
    find_champion = LambdaStep(
        name=spec.STEP_FIND_CHAMPION,
        lambda_func=lambda_function,
        inputs={
            "action": "find_champion",
            "endpoint_name": params["EndpointName"],
            "model_package_group": settings.model_package_group,
            # With no champion the Evaluate step still needs an S3 input: the new model, ignored there.
            "fallback_model_data": model_artifact,
        },
        outputs=[
            LambdaOutput(output_name=name, output_type=LambdaOutputTypeEnum.String)
            for name in ("ChampionArn", "ChampionModelData", "ChampionSource")
        ],
    )
    champion_arn = find_champion.properties.Outputs["ChampionArn"]

    paths = ProcessingEnvironment(CONTAINER_ROOT)
    champion_path = paths.processing_dir / "champion"
    evaluator = Processor(
        role=settings.role,
        image_uri=settings.train_image,
        instance_count=1,
        instance_type=params["EvaluationInstanceType"],
        entrypoint=["detector", "evaluate"],  # baked into the training image: no code upload
        max_runtime_in_seconds=settings.evaluation_max_run_s,
        base_job_name=f"{settings.pipeline_name}-evaluate",
        sagemaker_session=session,
    )
    report = PropertyFile(name="EvaluationReport", output_name=spec.EVALUATION_OUTPUT, path=spec.EVALUATION_FILE)
    evaluation_uri = Join(on="/", values=[f"{root}/evaluation", execution_id])
    evaluate = ProcessingStep(
        name=spec.STEP_EVALUATE,
        step_args=evaluator.run(
            inputs=[
                _s3_input(ProcessingInput, ProcessingS3Input, "model", model_artifact, paths.model_input),
                _s3_input(ProcessingInput, ProcessingS3Input, "test", params["TestingData"], paths.test_input),
                _s3_input(ProcessingInput, ProcessingS3Input, "champion", find_champion.properties.Outputs["ChampionModelData"], champion_path),
            ],
            arguments=[
                "--champion", str(champion_path), "--champion-arn", champion_arn,
                "--max-regression", params["MaxRegression"].to_string(),
            ],
            outputs=[
                ProcessingOutput(
                    output_name=spec.EVALUATION_OUTPUT,
                    s3_output=ProcessingS3Output(
                        s3_uri=evaluation_uri, local_path=str(paths.evaluation_output), s3_upload_mode="EndOfJob"
                    ),
                )
            ],
        ),
        property_files=[report],
    )
    testing_ap = JsonGet(step_name=evaluate.name, property_file=report, json_path=spec.gate_metric_path(gate_metric))
    champion_ap = JsonGet(step_name=evaluate.name, property_file=report, json_path=f"{spec.CHAMPION}.metrics.{gate_metric}")
    champion_bar = JsonGet(step_name=evaluate.name, property_file=report, json_path=spec.champion_bar_path(gate_metric))

    builder = _serving_model(settings, session, model_artifact)
    register = ModelStep(
        name=spec.STEP_REGISTER,
        step_args=builder.register(
            model_package_group_name=settings.model_package_group,
            content_types=list(spec.CONTENT_TYPES),
            response_types=list(spec.RESPONSE_TYPES),
            inference_instances=[params["EndpointInstanceType"]],
            model_metrics=ModelMetrics(
                model_quality=ModelQuality(
                    statistics=MetricsSource(
                        content_type="application/json",
                        s3_uri=Join(on="/", values=[evaluation_uri, spec.EVALUATION_FILE]),
                    )
                )
            ),
            approval_status=params["ModelApprovalStatus"],
            # Read by the deploy function: a package registered Approved is deployed by this execution's
            # Deploy step, not again by the approval rule.
            customer_metadata_properties={spec.REGISTERED_AS: params["ModelApprovalStatus"]},
            description="Detectron2 detector trained and evaluated by the detector pipeline",
        ),
    )
    deploy = LambdaStep(
        name=spec.STEP_DEPLOY,
        lambda_func=lambda_function,
        inputs={
            "model_package_arn": register.properties.ModelPackageArn,
            "role_arn": settings.role,
            **{key: params[name] for key, name in DEPLOY_INPUTS.items()},
            "async_output_s3": f"{root}/async/output/",
            "async_failure_s3": f"{root}/async/failures/",
            "data_capture_s3": f"{root}/data-capture/",
        },
        outputs=[
            LambdaOutput(output_name="EndpointName", output_type=LambdaOutputTypeEnum.String),
            LambdaOutput(output_name="Action", output_type=LambdaOutputTypeEnum.String),
        ],
    )
    too_low = FailStep(
        name=spec.STEP_FAIL,
        error_message=Join(
            on=" ",
            values=[spec.fail_message_parts(gate_metric)[0], testing_ap, spec.fail_message_parts(gate_metric)[1], params["MinTestingAP"]],
        ),
    )
    transform = _transform_steps(settings, session, params, model_artifact, register)
    parts = spec.champion_fail_message_parts(gate_metric)
    worse = FailStep(
        name=spec.STEP_CHAMPION_FAIL,
        error_message=Join(
            on=" ",
            values=[parts[0], testing_ap, parts[1], champion_ap, parts[2], params["MaxRegression"], parts[3], champion_bar,
                    parts[4], champion_arn],
        ),
    )
    # Two tests, one after the other, so that the Fail step names the one that failed.
    check_champion = ConditionStep(
        name=spec.STEP_CHECK_CHAMPION,
        conditions=[ConditionGreaterThanOrEqualTo(left=testing_ap, right=champion_bar)],
        if_steps=[register, deploy, transform],
        else_steps=[worse],
    )
    check = ConditionStep(
        name=spec.STEP_CHECK,
        conditions=[ConditionGreaterThanOrEqualTo(left=testing_ap, right=params["MinTestingAP"])],
        if_steps=[check_champion],
        else_steps=[too_low],
    )
    return Pipeline(
        name=settings.pipeline_name,
        parameters=list(params.values()),
        steps=[train, find_champion, evaluate, check],
        sagemaker_session=session,
        pipeline_experiment_config=None,  # no SageMaker Experiments: fewer permissions for the role
    )


def _serving_model(settings: PipelineSettings, session, model_artifact, env_vars: dict | None = None):
    """A model of the serving image and the trained artifact (for Register, and for the Transform step)."""
    from sagemaker.serve.model_builder import ModelBuilder

    extra = {"env_vars": env_vars} if env_vars else {}
    return ModelBuilder(
        image_uri=settings.serve_image,
        s3_model_data_url=model_artifact,
        role_arn=settings.role,
        sagemaker_session=session,
        dependencies=None,
        **extra,
    )


def _transform_steps(settings: PipelineSettings, session, params: dict, model_artifact, register):
    """CheckTransformInput: unless TransformInput is empty, after Register, a model of the serving image
    and the trained artifact (TransformModel) scores that prefix in a Batch Transform job (Transform),
    one image per record, into ``<root>/transform/<execution id>/`` (one ``<image>.out`` JSON per image)."""
    from sagemaker.core.transformer import Transformer
    from sagemaker.core.workflow.conditions import ConditionEquals, ConditionNot
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.steps import TransformStep

    builder = _serving_model(settings, session, model_artifact, {"SAGEMAKER_BATCH": "true"})  # transform-job limits
    model = ModelStep(name=spec.STEP_TRANSFORM_MODEL, step_args=builder.build())
    transformer = Transformer(
        model_name=model.properties.ModelName,
        instance_count=1,
        instance_type=params["TransformInstanceType"],
        strategy="SingleRecord",
        accept="application/json",
        output_path=Join(on="/", values=[f"{settings.root}/{spec.TRANSFORM_OUTPUT}", ExecutionVariables.PIPELINE_EXECUTION_ID]),
        base_transform_job_name=f"{settings.pipeline_name}-transform",
        sagemaker_session=session,
    )
    # MaxConcurrentTransforms and MaxPayloadInMB are left to the container's GET /execution-parameters.
    transform = TransformStep(
        name=spec.STEP_TRANSFORM,
        step_args=transformer.transform(
            data=params["TransformInput"],
            content_type="application/x-image",
            split_type="None",
            model_client_config={"InvocationsTimeoutInSeconds": 3600, "InvocationsMaxRetries": 1},
        ),
    )
    return ConditionStep(
        name=spec.STEP_CHECK_TRANSFORM,
        depends_on=[register],
        conditions=[ConditionNot(expression=ConditionEquals(left=params["TransformInput"], right=""))],
        if_steps=[model, transform],
        else_steps=[],
    )


# Deploy Lambda input -> the pipeline parameter that sets it.
DEPLOY_INPUTS = {
    "endpoint_name": "EndpointName",
    "instance_type": "EndpointInstanceType",
    "endpoint_mode": "EndpointMode",
    "instance_count": "EndpointMinInstances",
    "max_instance_count": "EndpointMaxInstances",
    "invocations_per_instance": "InvocationsPerInstance",
    "traffic_routing": "TrafficRouting",
    "traffic_percent": "TrafficPercent",
    "bake_time_s": "BakeTimeSeconds",
    "latency_alarm_ms": "LatencyAlarmMs",
    "data_capture_percent": "DataCapturePercent",
    "async_max_concurrent": "AsyncMaxConcurrentInvocations",
    "async_success_topic": "AsyncSuccessTopic",
    "async_error_topic": "AsyncErrorTopic",
    "serverless_memory_mb": "ServerlessMemoryMB",
    "serverless_max_concurrency": "ServerlessMaxConcurrency",
}


def _s3_input(input_cls, s3_cls, name: str, s3_uri, local_path: Path):
    return input_cls(
        input_name=name,
        s3_input=s3_cls(s3_uri=s3_uri, local_path=str(local_path), s3_data_type="S3Prefix", s3_input_mode="File"),
    )
