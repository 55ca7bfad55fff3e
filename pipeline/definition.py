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

``get_local_pipeline`` is the variant SageMaker's local mode can run (no Lambda, no model registry): Train
-> Evaluate (no champion) -> CheckTestingAP -> the Transform steps, else TestingAPTooLow, from the same
builders, with ``file://`` locations under a local folder (docs/pipeline.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from detector import pipeline_spec as spec
from detector.environment import ProcessingEnvironment
from detector.training.weights import PRETRAINED_CHANNEL

from .settings import PipelineConfigError, PipelineSettings

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
    gate_metric = _gate_metric(settings, gate_metric)

    import boto3
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.shapes import MetricsSource, ModelMetrics, ModelQuality, ProcessingInput, ProcessingS3Input
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaOutputTypeEnum, LambdaStep
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    # Placeholder credentials: nothing built here may reach AWS (upsert/start use the caller's own session).
    boto_session = boto3.Session(aws_access_key_id="offline", aws_secret_access_key="offline", region_name=settings.region)
    session = PipelineSession(boto_session=boto_session, default_bucket=settings.bucket)
    root = settings.root

    params = _parameters(root)
    train = _training_step(settings, session, params, gate_metric)
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

    champion_path = ProcessingEnvironment(CONTAINER_ROOT).processing_dir / "champion"
    evaluate, report, evaluation_uri = _evaluation_step(
        settings, session, params, model_artifact,
        extra_inputs=[
            _s3_input(ProcessingInput, ProcessingS3Input, "champion", find_champion.properties.Outputs["ChampionModelData"], champion_path),
        ],
        arguments=[
            "--champion", str(champion_path), "--champion-arn", champion_arn,
            "--max-regression", params["MaxRegression"].to_string(),
        ],
    )
    testing_ap = _gate_value(evaluate, report, gate_metric)
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
    transform = _transform_steps(settings, session, params, model_artifact, depends_on=[register])
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
    check = _gate_step(testing_ap, params, gate_metric, if_steps=[check_champion])
    return Pipeline(
        name=settings.pipeline_name,
        parameters=list(params.values()),
        steps=[train, find_champion, evaluate, check],
        sagemaker_session=session,
        pipeline_experiment_config=None,  # no SageMaker Experiments: fewer permissions for the role
    )


# --- the local-mode variant --------------------------------------------------------------------------

# A role ARN is required by the SDK's builders; local mode never assumes it.
LOCAL_ROLE = "arn:aws:iam::000000000000:role/unused-in-local-mode"
# What SageMaker's local mode runs of the pipeline: Train -> Evaluate -> CheckTestingAP -> (TransformModel ->
# Transform, unless TransformInput is empty) or TestingAPTooLow. Local mode has no Lambda (FindChampion,
# Deploy) and no model registry (Register), so there is no champion either.
LOCAL_PARAMETERS = (
    "TrainingInstanceType", "TrainingInstanceCount", "NumEpoch", "LearningRate", "MaxIter", "PretrainedWeights", "s3Path",
    "TrainingData", "TestingData", "EvaluationInstanceType", "MinTestingAP", "TransformInput", "TransformInstanceType",
)
LOCAL_INSTANCE_TYPES = {"TrainingInstanceType": "local", "EvaluationInstanceType": "local", "TransformInstanceType": "local"}
# The local variant's own parameter (with pretrained_channel): what the `pretrained` channel mounts.
PRETRAINED_MODEL = "PretrainedModel"


@dataclass(frozen=True)
class LocalPipelineSettings:
    """The local-mode variant: images in the local engine's store (any name ``docker run`` accepts) and a
    folder that holds the default data channels (``data/training/``, ``data/testing/``) and receives the
    models, evaluation reports and transform output (``file://`` locations)."""

    train_image: str
    serve_image: str
    folder: Path
    pipeline_name: str = "detector-local"
    region: str = "us-east-1"  # the SDK wants one; nothing is sent there
    # Static training hyperparameters (strings), as PipelineSettings.hyperparameters.
    hyperparameters: dict[str, str] = field(default_factory=dict)
    # Train from a `pretrained` channel (the PretrainedModel parameter: a file:// folder holding a model
    # directory, one model.tar.gz or one weights file) instead of the PretrainedWeights hyperparameter.
    pretrained_channel: bool = False
    role: str = LOCAL_ROLE
    # Written into the definition by the shared builders; local mode does not apply them.
    max_run_s: int = 24 * 3600
    max_wait_s: int = 48 * 3600
    training_volume_gb: int = 100
    evaluation_max_run_s: int = 3600

    def __post_init__(self) -> None:
        for what, image in (("train image", self.train_image), ("serve image", self.serve_image)):
            if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
                raise PipelineConfigError(f"{what} {image!r} is not valid: expected an image name in the local engine's store")
        bad = {k: v for k, v in self.hyperparameters.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise PipelineConfigError(f"hyperparameters must map strings to strings (SageMaker's contract), got {bad}")

    @property
    def root(self) -> str:
        # Not Path.as_uri(): local mode reads the path of a file:// URI as it is, without unquoting.
        return f"file://{Path(self.folder).resolve()}"


def get_local_pipeline(settings: LocalPipelineSettings, session=None, gate_metric: str | None = None):
    """The local-mode variant of the pipeline, to run with ``session`` (a local pipeline session; without
    one, a placeholder session that can only build the definition).

    Train, Evaluate (``detector evaluate`` without a champion), CheckTestingAP with TestingAPTooLow, and
    the Transform steps, built by the same builders as :func:`get_pipeline`; every instance type defaults
    to ``local``."""
    with _offline_sdk(settings.region):
        return _build_local(settings, session, gate_metric)


def local_pipeline_definition(settings: LocalPipelineSettings, gate_metric: str | None = None) -> str:
    """The local-mode variant's definition JSON, built offline."""
    with _offline_sdk(settings.region):
        return _build_local(settings, None, gate_metric).definition()


def _build_local(settings: LocalPipelineSettings, session=None, gate_metric: str | None = None):
    gate_metric = _gate_metric(settings, gate_metric)

    from sagemaker.core.workflow.parameters import ParameterString
    from sagemaker.mlops.workflow.pipeline import Pipeline

    if session is None:  # enough to build and print the definition
        import boto3
        from sagemaker.core.workflow.pipeline_context import PipelineSession

        boto_session = boto3.Session(aws_access_key_id="offline", aws_secret_access_key="offline", region_name=settings.region)
        session = PipelineSession(boto_session=boto_session)
    names = tuple(n for n in LOCAL_PARAMETERS if not (settings.pretrained_channel and n == "PretrainedWeights"))
    params = _parameters(settings.root, names, LOCAL_INSTANCE_TYPES)
    extra_channels = {}
    if settings.pretrained_channel:
        params[PRETRAINED_MODEL] = ParameterString(name=PRETRAINED_MODEL, default_value=f"{settings.root}/pretrained/")
        extra_channels[PRETRAINED_CHANNEL] = params[PRETRAINED_MODEL]
    train = _training_step(settings, session, params, gate_metric, extra_channels)
    model_artifact = train.properties.ModelArtifacts.S3ModelArtifacts
    # Named explicitly: SageMaker downloads the one object model.tar.gz into the model input, but local mode
    # mounts the folder that holds it, where output.tar.gz lies beside it.
    model_archive = str(ProcessingEnvironment(CONTAINER_ROOT).model_input / "model.tar.gz")
    evaluate, report, _ = _evaluation_step(settings, session, params, model_artifact, arguments=["--model", model_archive])
    testing_ap = _gate_value(evaluate, report, gate_metric)
    transform = _transform_steps(settings, session, params, model_artifact)
    check = _gate_step(testing_ap, params, gate_metric, if_steps=[transform])
    return Pipeline(
        name=settings.pipeline_name,
        parameters=list(params.values()),
        steps=[train, evaluate, check],
        sagemaker_session=session,
        pipeline_experiment_config=None,
    )


# --- the pieces both variants are built from -------------------------------------------------------


def _gate_metric(settings, gate_metric: str | None) -> str:
    """The metric the gate compares with MinTestingAP; fails naming the choices, before the SDK is imported."""
    gate_metric = gate_metric or spec.gate_metric_for(settings.hyperparameters.get("model"))
    spec.gate_metric_path(gate_metric)
    return gate_metric


def _parameters(root: str, names: tuple[str, ...] | None = None, defaults: dict | None = None) -> dict:
    """The SDK parameters of ``spec.PARAMETERS`` (those in ``names``, all by default), with ``{root}`` filled
    in and ``defaults`` replacing the spec's defaults."""
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    kinds = {spec.STRING: ParameterString, spec.INTEGER: ParameterInteger, spec.FLOAT: ParameterFloat}
    defaults = defaults or {}
    return {
        p.name: kinds[p.type](name=p.name, default_value=defaults.get(p.name, p.default_for(root)))
        for p in spec.PARAMETERS
        if names is None or p.name in names
    }


def _training_step(settings, session, params: dict, gate_metric: str, extra_channels: dict | None = None):
    """Train: the training image's own ENTRYPOINT (``detector train``) on the training and testing channels
    (and ``extra_channels``: channel name -> data source); every parameter in ``params`` that names a
    hyperparameter is passed to it as a string."""
    from sagemaker.core.shapes import MetricDefinition
    from sagemaker.core.training.configs import CheckpointConfig, Compute, InputData, OutputDataConfig, StoppingCondition
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train.model_trainer import ModelTrainer

    model = settings.hyperparameters.get("model")
    metric_definitions = spec.METRIC_DEFINITIONS + (spec.MASK_METRIC_DEFINITIONS if spec.is_mask_model(model) else ())
    hyperparameters = dict(settings.hyperparameters)
    for p in spec.PARAMETERS:
        if p.hyperparameter and p.name in params:
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
            s3_uri=Join(on="/", values=[params["s3Path"], ExecutionVariables.PIPELINE_EXECUTION_ID]),
            local_path=str(CONTAINER_ROOT / "checkpoints"),
        ),
        output_data_config=OutputDataConfig(s3_output_path=f"{settings.root}/models"),
        hyperparameters=hyperparameters,
    ).with_metric_definitions([MetricDefinition(name=name, regex=regex) for name, regex in metric_definitions])
    channels = {spec.TRAINING_CHANNEL: params["TrainingData"], spec.TESTING_CHANNEL: params["TestingData"], **(extra_channels or {})}
    return TrainingStep(
        name=spec.STEP_TRAIN,
        step_args=trainer.train(
            input_data_config=[InputData(channel_name=name, data_source=source) for name, source in channels.items()]
        ),
    )


def _evaluation_step(settings, session, params: dict, model_artifact, extra_inputs=(), arguments=None):
    """Evaluate: ``detector evaluate`` in the training image on the model and the testing channel (and
    ``extra_inputs``); its ``evaluation.json`` is the EvaluationReport property file.
    Returns (step, property file, the evaluation output's location)."""
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    paths = ProcessingEnvironment(CONTAINER_ROOT)
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
    evaluation_uri = Join(on="/", values=[f"{settings.root}/evaluation", ExecutionVariables.PIPELINE_EXECUTION_ID])
    step = ProcessingStep(
        name=spec.STEP_EVALUATE,
        step_args=evaluator.run(
            inputs=[
                _s3_input(ProcessingInput, ProcessingS3Input, "model", model_artifact, paths.model_input),
                _s3_input(ProcessingInput, ProcessingS3Input, "test", params["TestingData"], paths.test_input),
                *extra_inputs,
            ],
            arguments=arguments,
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
    return step, report, evaluation_uri


def _gate_value(evaluate, report, gate_metric: str):
    """The gate metric as the Evaluate step's property file holds it."""
    from sagemaker.core.workflow.functions import JsonGet

    return JsonGet(step_name=evaluate.name, property_file=report, json_path=spec.gate_metric_path(gate_metric))


def _gate_step(testing_ap, params: dict, gate_metric: str, if_steps: list):
    """CheckTestingAP: ``if_steps`` when the gate metric is at least MinTestingAP, else TestingAPTooLow,
    a Fail step whose message names the metric's value and the threshold."""
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep

    first, second = spec.fail_message_parts(gate_metric)
    too_low = FailStep(name=spec.STEP_FAIL, error_message=Join(on=" ", values=[first, testing_ap, second, params["MinTestingAP"]]))
    return ConditionStep(
        name=spec.STEP_CHECK,
        conditions=[ConditionGreaterThanOrEqualTo(left=testing_ap, right=params["MinTestingAP"])],
        if_steps=if_steps,
        else_steps=[too_low],
    )


def _serving_model(settings, session, model_artifact, env_vars: dict | None = None):
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


def _transform_steps(settings, session, params: dict, model_artifact, depends_on: list | None = None):
    """CheckTransformInput: unless TransformInput is empty, after ``depends_on`` (Register), a model of the serving image
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
        depends_on=depends_on,
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
