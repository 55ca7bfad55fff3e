"""The SageMaker Python SDK's own local mode (sagemaker 3.27) with the built images: a training job through
``ModelTrainer`` in ``Mode.LOCAL_CONTAINER``, a local endpoint from its ``model.tar.gz``, and the project's
pipeline (``pipeline.definition.get_local_pipeline``) run by a local pipeline session, once through to the
Transform step and once to the Fail step.

The SDK runs every job with ``docker-compose up`` (or ``docker compose``) in a working folder under this
module's temporary folder, and leaves each job's stopped container behind: the ``sdk_local`` fixture removes
them, and the ``sagemaker-local`` network when the SDK made it. No AWS credentials are visible to the SDK
(so none reach a container) and its telemetry is off. Every workaround for an SDK 3.27 bug is here, each
with a comment naming it; see docs/pipeline.md ("The pipeline in SageMaker's local mode").
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
from conftest import SERVE_IMAGE, TRAIN_IMAGE, copy_model, demo_hyperparameters, docker, in_process_answer, iou

from detector import pipeline_spec as spec
from detector.model_dir import extract_model_archive, read_model_dir
from detector.serving.model_server import free_port

pytestmark = pytest.mark.slow

REGION = "us-east-1"  # the SDK wants one; nothing is sent there
NETWORK = "sagemaker-local"  # the bridge network the SDK's compose files declare
COMPOSE_DIR_LABEL = "com.docker.compose.project.working_dir"
TRAINING_ITERATIONS = 30  # fine-tuning the interrupted_training model: enough to answer correctly
TRANSFORM_IMAGES = 8


# --- the SDK's environment and what it leaves behind ------------------------------------------------


@dataclass
class SdkLocal:
    root: Path  # every SDK working folder lies under it

    def containers(self, *, running: bool = False) -> list[str]:
        """The containers of the SDK's compose projects whose working folder is under ``root``."""
        listed = docker("ps", *([] if running else ["-a"]), "--filter", f"label={COMPOSE_DIR_LABEL}",
                        "--format", f'{{{{.ID}}}} {{{{.Label "{COMPOSE_DIR_LABEL}"}}}}').stdout
        return [line.split(" ", 1)[0] for line in listed.splitlines()
                if len(line.split(" ", 1)) == 2 and Path(line.split(" ", 1)[1]).is_relative_to(self.root)]

    def remove_containers(self) -> None:
        # SDK 3.27 runs `docker-compose up` and stops its containers at the end of a job or endpoint, but
        # never removes them (no `down`): stopped containers pile up without this.
        leftover = self.containers()
        if leftover:
            docker("rm", "-f", *leftover, check=False)


@pytest.fixture(scope="module")
def sdk_local(tmp_path_factory):
    """The SDK's settings for this module: a region, role validation and telemetry off (pipeline/sdk_config.yaml),
    and no credentials (no files, no environment variables, no instance metadata), so the SDK passes none to the
    containers. Afterwards: the SDK's containers removed, and its network if it was not there before."""
    from pipeline.definition import SDK_CONFIG

    root = tmp_path_factory.mktemp("sdk-local")
    network_existed = docker("network", "inspect", NETWORK, check=False).returncode == 0
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", str(root / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(root / "no-aws-credentials"))
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
        for name in ("SAGEMAKER_USER_CONFIG_OVERRIDE", "SAGEMAKER_ADMIN_CONFIG_OVERRIDE",
                     "SAGEMAKER_CORE_USER_CONFIG_OVERRIDE", "SAGEMAKER_CORE_ADMIN_CONFIG_OVERRIDE"):
            patch.setenv(name, str(SDK_CONFIG))
        local = SdkLocal(root)
        try:
            yield local
        finally:
            local.remove_containers()
            if not network_existed:
                docker("network", "rm", NETWORK, check=False)  # refused while someone else's container uses it


def local_session(cls, sdk: SdkLocal, name: str):
    """A local-mode session of ``cls`` whose jobs work under ``sdk.root/name`` and whose endpoints listen on a
    free port (local mode publishes one endpoint at a time on the port of the session's config)."""
    import boto3

    work = sdk.root / name
    work.mkdir()
    session = cls(boto_session=boto3.Session(region_name=REGION))
    session.config = {"local": {"serving_port": free_port(), "container_root": str(work)}}
    return session


@dataclass
class LabelledImage:
    path: Path
    width: int
    height: int
    objects: list[dict]  # its COCO annotations


def ground_truth(demo_data) -> dict[str, LabelledImage]:
    """The testing channel's images by file name, in the annotation file's order."""
    channel = demo_data["testing"]
    coco = json.loads((channel / "annotations.json").read_text())
    return {
        Path(image["file_name"]).name: LabelledImage(channel / image["file_name"], image["width"], image["height"],
                                                 [a for a in coco["annotations"] if a["image_id"] == image["id"]])
        for image in coco["images"]
    }


def found(detections: list[dict], obj: dict) -> bool:
    """A detection overlaps the ground-truth object's box with IoU >= 0.5 and has its category."""
    x, y, w, h = obj["bbox"]
    return any(d["category_id"] == obj["category_id"] and iou(d["bbox"], [x, y, x + w, y + h]) >= 0.5 for d in detections)


def assert_detections(answer: dict, image: LabelledImage) -> list[dict]:
    """The serving image's JSON answer for one image (serving/encoding.py); its detections."""
    width, height = image.width, image.height
    assert answer["image"] == {"width": width, "height": height}, answer
    for d in answer["detections"]:
        assert set(d) == {"bbox", "score", "category_id", "label"}, d
        x1, y1, x2, y2 = d["bbox"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and 0 < d["score"] <= 1, d
    return answer["detections"]


# --- 1. a training job through ModelTrainer -----------------------------------------------------------


@dataclass
class TrainerJob:
    archive_uri: str  # where the SDK says it put model.tar.gz
    log: str  # the container's output, as the SDK relays it

    @property
    def archive(self) -> Path:
        return Path(urlparse(self.archive_uri).path)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def trainer_job(sdk_local, demo_data, interrupted_training, tmp_path_factory) -> TrainerJob:
    """``ModelTrainer(training_mode=Mode.LOCAL_CONTAINER).train()`` with the training image: the demo's channels
    and a ``pretrained`` channel holding the interrupted_training model folder, fine-tuned for a few iterations
    (the ``weights`` hyperparameter is left out, so training starts from that channel)."""
    from sagemaker.core.local import LocalSession
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.train.model_trainer import Mode, ModelTrainer

    from pipeline.definition import LOCAL_ROLE

    pretrained = copy_model(interrupted_training.model_dir, tmp_path_factory.mktemp("pretrained") / "model")
    hyperparameters = demo_hyperparameters(max_iter=TRAINING_ITERATIONS)
    del hyperparameters["weights"]
    trainer = ModelTrainer(
        training_image=TRAIN_IMAGE,
        training_mode=Mode.LOCAL_CONTAINER,
        compute=Compute(instance_type="local", instance_count=1),
        hyperparameters=hyperparameters,
        role=LOCAL_ROLE,
        sagemaker_session=LocalSession(),
        base_job_name="detector-local",
        local_container_root=str(sdk_local.root / "model-trainer"),
    )
    # SDK 3.27: train() returns nothing in local mode; where it put model.tar.gz is only in its log message.
    records = _Records()
    sdk_logger = logging.getLogger("sagemaker.train.local.local_container")
    level = sdk_logger.level
    sdk_logger.setLevel(logging.INFO)
    sdk_logger.addHandler(records)
    output = io.StringIO()  # the SDK copies the container's output to sys.stdout
    start = time.monotonic()
    try:
        with contextlib.redirect_stdout(output):
            trainer.train(input_data_config=[
                InputData(channel_name=spec.TRAINING_CHANNEL, data_source=str(demo_data["training"])),
                InputData(channel_name=spec.TESTING_CHANNEL, data_source=str(demo_data["testing"])),
                InputData(channel_name="pretrained", data_source=str(pretrained)),
            ])
    finally:
        sdk_logger.removeHandler(records)
        sdk_logger.setLevel(level)
    seconds = time.monotonic() - start
    print(f"ModelTrainer local job: {seconds:.1f} s")  # shown with pytest -s or -rP
    saved = [r.args[0] for r in records.records if "output artifacts saved to" in r.msg and r.args]
    assert saved, f"the SDK did not say where the model went:\n{output.getvalue()[-5000:]}"
    return TrainerJob(saved[-1], output.getvalue())


def test_model_trainer_local_container_trains_a_model_archive(trainer_job, demo_data, tmp_path):
    assert trainer_job.archive_uri.startswith("file://") and trainer_job.archive_uri.endswith("/model.tar.gz")
    assert tarfile.is_tarfile(trainer_job.archive), trainer_job.archive_uri
    model = read_model_dir(extract_model_archive(trainer_job.archive, tmp_path / "model"))
    categories = json.loads((demo_data["testing"] / "annotations.json").read_text())["categories"]
    assert sorted(model.labels.dataset_ids) == sorted(c["id"] for c in categories)

    log = trainer_job.log
    # The pretrained channel was found and loaded whole (no weights hyperparameter).
    assert re.search(r"loaded (\d+) of the model's \1 tensors from /opt/ml/input/data/pretrained", log), log[-5000:]
    assert f"iter: {TRAINING_ITERATIONS - 1}" in log, log[-5000:]
    for name, regex in spec.METRIC_DEFINITIONS:
        values = [float(v) for v in re.findall(regex, log)]
        assert values and all(0.0 <= v <= 1.0 for v in values), f"no {name} line in the job's log:\n{log[-5000:]}"
    assert float(re.findall(r"testing_ap ([0-9.]+)", log)[-1]) > 0.2, log[-3000:]


# --- 2. a local endpoint of the serving image -----------------------------------------------------------


def test_a_local_endpoint_serves_the_model_archive(trainer_job, demo_data, sdk_local, tmp_path):
    from sagemaker.core.local import LocalSession

    # Local mode extracts a file:// model.tar.gz into the folder that holds it: give it a folder of its own.
    archive = tmp_path / "model" / "model.tar.gz"
    archive.parent.mkdir()
    shutil.copy(trainer_job.archive, archive)
    session = local_session(LocalSession, sdk_local, "endpoint")
    client = session.sagemaker_client
    name = f"detector-local-{uuid.uuid4().hex[:8]}"
    client.create_model(ModelName=name, PrimaryContainer={"Image": SERVE_IMAGE, "ModelDataUrl": f"file://{archive}", "Environment": {}})
    client.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "local"}])
    image = next(iter(ground_truth(demo_data).values()))
    before = set(sdk_local.containers())
    try:
        client.create_endpoint(EndpointName=name, EndpointConfigName=name)  # returns once GET /ping answers 200
        assert client.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
        response = session.sagemaker_runtime_client.invoke_endpoint(
            Body=image.path.read_bytes(), EndpointName=name, ContentType="image/png", Accept="application/json")
        status, content_type, answer = response["ResponseMetadata"]["HTTPStatusCode"], response["ContentType"], response["Body"].read()
    finally:
        client.delete_endpoint(EndpointName=name)
        client.delete_endpoint_config(EndpointConfigName=name)
        client.delete_model(ModelName=name)
    endpoint_containers = set(sdk_local.containers()) - before
    assert len(endpoint_containers) == 1, endpoint_containers
    assert not endpoint_containers & set(sdk_local.containers(running=True)), "delete_endpoint left the container running"
    sdk_local.remove_containers()
    assert not endpoint_containers & set(sdk_local.containers())

    assert status == 200, answer[:2000]
    assert content_type.startswith("application/json"), content_type
    detections = assert_detections(json.loads(answer), image)
    assert any(found(detections, obj) for obj in image.objects), f"no detection matches a ground-truth object: {detections} vs {image}"


# --- 3. the project's pipeline in local mode -------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_session(sdk_local):
    """A session that runs the local variant of the pipeline, with the SDK 3.27 workarounds it needs."""
    import sagemaker.mlops.local.pipeline as local_executor
    from sagemaker.core.workflow.pipeline_context import LocalPipelineSession as CoreLocalPipelineSession
    from sagemaker.mlops.local import LocalPipelineSession as MlopsLocalPipelineSession

    local_file = "local-file"  # stands for "not S3, a local path" where the executor wants a bucket name

    # SDK 3.27: the mlops session has create_pipeline/start_pipeline_execution but is no PipelineSession, so the
    # step builders (ModelTrainer.train, Processor.run, ModelBuilder.build, Transformer.transform) would run jobs
    # instead of recording them; the core session is a PipelineSession without the pipeline methods. Both:
    class Session(MlopsLocalPipelineSession, CoreLocalPipelineSession):
        def read_s3_file(self, bucket, key_prefix):
            # SDK 3.27: a property file at a file:// location (see parse_s3_url below) is read from disk.
            if bucket == local_file:
                return Path("/", key_prefix).read_text()
            return super().read_s3_file(bucket, key_prefix)

    session = local_session(Session, sdk_local, "pipeline")
    # SDK 3.27: ModelBuilder.build() wraps sagemaker_client._user_agent_creator.to_string, which only boto3's
    # clients have; the local client gets a stand-in (the user agent is never sent anywhere).
    session.sagemaker_client._user_agent_creator = SimpleNamespace(to_string=lambda: "")

    # SDK 3.27: the local executor reads a JsonGet's property file from the processing output's location with
    # parse_s3_url, which refuses the file:// location local mode writes it to (reported as "Invalid json path");
    # file:// locations become (local_file, path), read by Session.read_s3_file above.
    parse_s3_url = local_executor.parse_s3_url

    def parse_local_or_s3_url(url):
        return (local_file, urlparse(url).path) if str(url).startswith("file://") else parse_s3_url(url)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_executor, "parse_s3_url", parse_local_or_s3_url)
        yield session


@dataclass
class LocalExecution:
    folder: Path
    execution_id: str
    description: dict
    steps: dict[str, dict]

    def evaluation(self) -> dict:
        return json.loads((self.folder / "evaluation" / self.execution_id / spec.EVALUATION_FILE).read_text())


def run_local_pipeline(session, folder: Path, demo_data, model_archive, **parameters) -> LocalExecution:
    """The local variant of the project's pipeline, created and started with ``session`` and ``parameters``."""
    from pipeline.definition import LocalPipelineSettings, get_local_pipeline

    # Static hyperparameters of the demo (the parameters set the others); the `pretrained` channel replaces `weights`.
    static = {k: v for k, v in demo_hyperparameters().items() if k not in {p.hyperparameter for p in spec.PARAMETERS}}
    folder.mkdir(parents=True)
    settings = LocalPipelineSettings(TRAIN_IMAGE, SERVE_IMAGE, folder, pipeline_name=f"detector-local-{uuid.uuid4().hex[:8]}",
                                     hyperparameters=static, pretrained_channel=True)
    pipeline = get_local_pipeline(settings, session)
    # SDK 3.27: Pipeline.create()/start() in local mode call sagemaker_client.create_pipeline/start_pipeline_execution,
    # which the local client no longer has (they moved to the session).
    session.create_pipeline(pipeline, "detector pipeline, local mode")
    values = {
        "TrainingData": f"file://{demo_data['training']}", "TestingData": f"file://{demo_data['testing']}",
        "PretrainedModel": f"file://{model_archive.parent}",  # a folder holding one model.tar.gz
        "MaxIter": TRAINING_ITERATIONS, "LearningRate": 0.04, "NumEpoch": 100.0, **parameters,
    }
    start = time.monotonic()
    execution = session.start_pipeline_execution(pipeline.name, PipelineParameters=values)
    seconds = time.monotonic() - start
    print(f"local pipeline execution: {seconds:.1f} s")  # shown with pytest -s or -rP
    description = execution.describe()
    steps = {s["StepName"]: s for s in execution.list_steps()["PipelineExecutionSteps"]}
    return LocalExecution(folder, description["PipelineExecutionArn"], description, steps)


def statuses(execution: LocalExecution) -> dict[str, str]:
    return {name: step["StepStatus"] for name, step in execution.steps.items()}


def test_local_pipeline_trains_evaluates_and_transforms(pipeline_session, demo_data, model_archive, tmp_path):
    truth = ground_truth(demo_data)
    images = tmp_path / "transform-input"
    images.mkdir()
    for name in sorted(truth)[:TRANSFORM_IMAGES]:
        shutil.copy(truth[name].path, images)
    execution = run_local_pipeline(pipeline_session, tmp_path / "run", demo_data, model_archive,
                                   MinTestingAP=0.1, TransformInput=f"file://{images}")

    assert execution.description["PipelineExecutionStatus"] == "Succeeded", (execution.description, execution.steps)
    assert statuses(execution) == {
        spec.STEP_TRAIN: "Succeeded", spec.STEP_EVALUATE: "Succeeded", spec.STEP_CHECK: "Succeeded",
        spec.STEP_CHECK_TRANSFORM: "Succeeded", spec.STEP_TRANSFORM_MODEL: "Succeeded", spec.STEP_TRANSFORM: "Succeeded",
    }
    assert execution.steps[spec.STEP_CHECK]["Metadata"] == {"Condition": {"Outcome": True}}
    report = execution.evaluation()
    assert 0.1 <= report["metrics"]["testing_ap"]["value"] <= 1.0
    assert report[spec.CHAMPION]["arn"] == spec.NO_CHAMPION  # evaluated without --champion
    outputs = sorted((execution.folder / spec.TRANSFORM_OUTPUT / execution.execution_id).iterdir())
    assert [p.name for p in outputs] == [f"{p.name}.out" for p in sorted(images.iterdir())]
    # Each answer is the trained model's own (the model run in this process: same categories, boxes within 1 px,
    # scores within 0.02), and the model finds most objects of the images.
    model = extract_model_archive(execution.folder / "models" / "model.tar.gz", tmp_path / "model")
    objects = hits = 0
    for output in outputs:
        name = output.name.removesuffix(".out")
        served = assert_detections(json.loads(output.read_text()), truth[name])
        expected = in_process_answer(model, truth[name].path.read_bytes())
        assert [d["category_id"] for d in served] == [d["category_id"] for d in expected], (name, served, expected)
        for got, want in zip(served, expected):
            assert got["bbox"] == pytest.approx(want["bbox"], abs=1.0) and got["score"] == pytest.approx(want["score"], abs=0.02), (name, got, want)
        objects += len(truth[name].objects)
        hits += sum(found(served, obj) for obj in truth[name].objects)
    assert hits >= 0.6 * objects, f"{hits} of {objects} objects found with IoU >= 0.5 and their category"


def test_local_pipeline_stops_at_the_fail_step_below_the_threshold(pipeline_session, demo_data, model_archive, tmp_path):
    execution = run_local_pipeline(pipeline_session, tmp_path / "run", demo_data, model_archive, MaxIter=1, MinTestingAP=0.99)

    testing_ap = execution.evaluation()["metrics"]["testing_ap"]["value"]
    assert testing_ap < 0.99
    message = spec.fail_message(testing_ap, 0.99)  # "Model not registered: testing_ap <AP> is below MinTestingAP 0.99"
    assert execution.description["PipelineExecutionStatus"] == "Failed"
    assert execution.description["FailureReason"] == f"Step '{spec.STEP_FAIL}' failed with message: {message}"
    assert statuses(execution) == {
        spec.STEP_TRAIN: "Succeeded", spec.STEP_EVALUATE: "Succeeded", spec.STEP_CHECK: "Succeeded", spec.STEP_FAIL: "Failed",
    }
    assert execution.steps[spec.STEP_CHECK]["Metadata"] == {"Condition": {"Outcome": False}}
    assert execution.steps[spec.STEP_FAIL]["Metadata"] == {"Fail": {"ErrorMessage": message}}
    assert not (execution.folder / spec.TRANSFORM_OUTPUT).exists()
