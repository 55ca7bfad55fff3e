"""Run the pipeline's steps on this machine, in the pipeline's order, each as its own process.

data → Train (``detector train``) → Evaluate (``detector evaluate``, which also scores the champion:
the newest Approved package of the local registry) → CheckTestingAP → CheckChampion → Register (local
model registry) → Deploy (``detector serve`` on a local port, one real request).

Every step gets its own ``/opt/ml`` folder under ``<root>/executions/<id>/`` exactly as its container
would. Training checkpoints live in ``<root>/executions/<id>/train/checkpoints``: ``--resume``
reruns the newest execution in place, which resumes training from its checkpoints like a Spot restart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import pipeline_spec as spec
from ..data.coco import find_annotation_file, load_coco
from ..environment import DEFAULT_BASE_DIR, TrainingLayout, prepare_processing_job, prepare_serving, write_training_job
from ..errors import DetectorError
from ..model_dir import write_model_archive
from ..serving.model_server import free_port, ping
from ..training.checkpoint import CheckpointStore
from ..data.synthetic import generate_channels
from .executions import execution_dir, save_parameters
from .progress import TrainingProgress
from .registry import LocalModelRegistry, ModelPackage

MODEL_PACKAGE_GROUP = "detector"
LOG_TAIL_LINES = 12
# Each step's log, under its folder: what a failure message points to.
STEP_LOGS = {spec.STEP_TRAIN: "train.log", spec.STEP_EVALUATE: "evaluate.log", spec.STEP_DEPLOY: "serve.log",
             spec.STEP_TRANSFORM: "transform.log"}

# The SageMaker defaults train R50-FPN for 90k iterations on a GPU. On a CPU the local run trains the
# small packaged model instead; every other parameter keeps the pipeline's default.
LOCAL_PARAMETER_DEFAULTS: dict[str, spec.Value] = {
    "MaxIter": 600, "NumEpoch": 100.0, "LearningRate": 0.04, "MinTestingAP": 0.6,
    # No downloads on a workstation by default: the small model's own (empty) weights, from scratch.
    "PretrainedWeights": "default",
}
# PretrainedWeights=registry:latest warm-starts from the newest Approved package of the local registry.
REGISTRY_LATEST = "registry:latest"
LOCAL_HYPERPARAMETERS = {
    "model": "detector/faster_rcnn_R_18_FPN_128px.yaml",
    "batch_size": "8",
    "checkpoint_period": "100",
    "num_workers": "1",
    "log_period": "10",
}
DEMO_DATA = {"train_images": 256, "test_images": 64, "image_size": 256, "seed": 0}
# On the demo data, training_ap on 64 of its 256 training images (as many as its test set): 1.5 s
# instead of 6. A run on your own channels (--data) keeps the hyperparameter's default.
DEMO_HYPERPARAMETERS = {"training_eval_images": str(DEMO_DATA["test_images"])}


def local_parameters(root: Path, overrides: dict[str, spec.Value]) -> dict[str, spec.Value]:
    """A local run's parameters: the pipeline's defaults, the local ones, then ``overrides``."""
    return {**spec.defaults(str(Path(root).resolve())), **LOCAL_PARAMETER_DEFAULTS, **overrides}


class PipelineFailed(DetectorError):
    """A step failed, or the gate stopped the run; the message says which and why."""


@dataclass
class StepRecord:
    name: str
    status: str = "pending"
    seconds: float = 0.0


@dataclass
class LocalRun:
    root: Path
    parameters: dict[str, spec.Value]
    execution_id: str
    backend: object
    data_dir: Path | None = None
    keep_serving: bool = False
    progress: str = "bar"  # "bar" (a terminal), "lines" (plain lines for logs) or "none"
    hyperparameters: dict[str, str] = field(default_factory=lambda: dict(LOCAL_HYPERPARAMETERS))
    # The metric the gate compares with MinTestingAP (spec.GATE_METRICS); None: the model's default.
    gate_metric: str | None = None
    log: Callable[[str], None] = print
    steps: list[StepRecord] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    package: ModelPackage | None = None
    endpoint_url: str | None = None
    server: subprocess.Popen | None = None

    @property
    def execution_dir(self) -> Path:
        return execution_dir(self.root, self.execution_id)

    def step_dir(self, name: str) -> Path:
        return self.execution_dir / name.lower()

    def step_log(self, name: str) -> Path:
        return self.step_dir(name) / STEP_LOGS.get(name, f"{name.lower()}.log")

    def failed(self, name: str, what: str) -> "PipelineFailed":
        """The failure of step ``name``: what failed, then the end of the step's log and where it is."""
        log = self.step_log(name)
        message = f"step {name} failed: {what}"
        tail = log_tail(log)
        if tail:
            message += f"\n  last lines of {log}:\n" + "\n".join(f"    {line}" for line in tail)
        elif log.exists():
            message += f" (log: {log})"
        return PipelineFailed(message)

    # -- orchestration ------------------------------------------------------------------------

    def run(self) -> int:
        save_parameters(self.root, self.execution_id, self.parameters)
        self.log(f"Execution {self.execution_id} in {self.execution_dir} ({self.backend.name} backend)")
        try:
            channels = self._step("Data", self.prepare_data)
            model_archive = self._step(spec.STEP_TRAIN, lambda: self.train(channels))
            evaluation = self._step(spec.STEP_EVALUATE, lambda: self.evaluate(model_archive, channels["testing"]))
            self._step(spec.STEP_CHECK, lambda: self.check(evaluation))
            self._step(spec.STEP_CHECK_CHAMPION, lambda: self.check_champion(evaluation))
            self.package = self._step(spec.STEP_REGISTER, lambda: self.register(model_archive, evaluation))
            self._step(spec.STEP_DEPLOY, lambda: self.deploy(self.package, channels["testing"]))
            if self.parameters.get("TransformInput"):
                self._step(spec.STEP_TRANSFORM, lambda: self.transform(model_archive, channels["testing"]))
        except PipelineFailed as failure:
            self.summary()
            self.log(f"Pipeline failed: {failure}")
            return 1
        finally:
            if self.server is not None and not self.keep_serving:
                stop_server(self.server)
        self.summary()
        return 0

    def _step(self, name: str, action):
        record = StepRecord(name, "running")
        self.steps.append(record)
        self.log(f"[{name}]")
        started = time.monotonic()
        try:
            result = action()
            record.status = "succeeded"
            return result
        except PipelineFailed:
            record.status = "failed"
            raise
        except DetectorError as e:
            record.status = "failed"
            raise self.failed(name, str(e)) from e
        except Exception as e:
            # A fault of this program, not of the user's input: the traceback goes to the step's log.
            record.status = "failed"
            log = self.step_log(name)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                traceback.print_exception(type(e), e, e.__traceback__, file=f)
            raise PipelineFailed(f"step {name} failed: unexpected {type(e).__name__}: {e} (traceback in {log})") from e
        finally:
            record.seconds = time.monotonic() - started

    # -- steps ---------------------------------------------------------------------------------

    def prepare_data(self) -> dict[str, Path]:
        if self.data_dir is not None:
            channels = {name: self.data_dir / name for name in (spec.TRAINING_CHANNEL, spec.TESTING_CHANNEL)}
            missing = [str(p) for p in channels.values() if not p.is_dir()]
            if missing:
                raise PipelineFailed(f"--data {self.data_dir}: expected channel folders {', '.join(missing)}")
            self.log(f"  channels from {self.data_dir}")
            return channels
        # A mask model gets the same images with masks drawn (polygons and RLE), in a folder of their own.
        masks = spec.is_mask_model(self.hyperparameters.get("model"))
        data = self.root / ("demo-data-masks" if masks else "demo-data")
        if not (data / "testing" / "annotations.json").exists():
            generate_channels(
                data, DEMO_DATA["train_images"], DEMO_DATA["test_images"], DEMO_DATA["image_size"], DEMO_DATA["seed"], masks=masks
            )
            self.log(f"  generated synthetic channels{' with masks' if masks else ''} in {data}")
        else:
            self.log(f"  synthetic channels in {data}")
        return {"training": data / "training", "testing": data / "testing"}

    def training_hyperparameters(self) -> dict[str, str]:
        hyperparameters = dict(self.hyperparameters)
        if self.data_dir is None:
            hyperparameters = {**DEMO_HYPERPARAMETERS, **hyperparameters}
        for parameter in spec.PARAMETERS:
            if parameter.hyperparameter:
                hyperparameters[parameter.hyperparameter] = str(self.parameters[parameter.name])
        if hyperparameters.get("weights") == REGISTRY_LATEST:
            hyperparameters["weights"] = str(self.latest_approved_archive().absolute())
        return hyperparameters

    def latest_approved(self) -> ModelPackage | None:
        """The newest Approved package of the local registry: the champion of a local run (its endpoint
        lives only as long as the run, so the registry stands in for "the model in service")."""
        return LocalModelRegistry(self.root / "registry").latest_approved(MODEL_PACKAGE_GROUP)

    def latest_approved_archive(self) -> Path:
        package = self.latest_approved()
        if package is not None:
            self.log(f"  warm start from {package.arn} ({package.model_archive})")
            return package.model_archive
        raise PipelineFailed(
            f"PretrainedWeights={REGISTRY_LATEST}: no Approved model package in {self.root / 'registry'}; "
            "run the pipeline once, or approve a package"
        )

    def train(self, channels: dict[str, Path]) -> Path:
        base = self.step_dir(spec.STEP_TRAIN)
        # The channels are copied once: a resumed execution trains on the same copy.
        write_training_job(base, self.training_hyperparameters(), channels)
        job = TrainingLayout(base)
        shutil.rmtree(job.model_dir, ignore_errors=True)
        job.failure_file.unlink(missing_ok=True)
        checkpoints = CheckpointStore(job.checkpoint_dir).files()
        if checkpoints:
            self.log(f"  resuming from {checkpoints[-1][1].name} (like a Spot restart)")

        progress = TrainingProgress(sys.stderr if self.progress == "bar" else sys.stdout, mode=self.progress)
        # One job name per execution, as SageMaker gives each training job: reset_checkpoints acts once
        # per execution, and --resume continues instead of discarding again.
        code = self._run_logged(
            ["train"], base, self.step_log(spec.STEP_TRAIN), progress.line, {"TRAINING_JOB_NAME": f"local-{self.execution_id}"}
        )
        progress.close()
        if code != 0:
            raise self.failed(spec.STEP_TRAIN, exit_reason(code, job.failure_file))
        self.metrics.update(progress.metrics)
        for name in ("training_ap", "testing_ap"):
            if name in progress.metrics:
                self.log(f"  {name} {progress.metrics[name]:.4f}")
        # What SageMaker uploads from /opt/ml/model.
        archive = write_model_archive(job.model_dir, self.execution_dir / "artifacts" / "model.tar.gz")
        self.log(f"  model artifact {archive}")
        return archive

    def evaluate(self, model_archive: Path, testing: Path) -> dict:
        base = self.step_dir(spec.STEP_EVALUATE)
        shutil.rmtree(base, ignore_errors=True)
        job = prepare_processing_job(base, model_archive, testing)
        args = ["evaluate", "--max-regression", str(float(self.parameters["MaxRegression"]))]
        champion = self.latest_approved()
        if champion is not None:
            # Where the SageMaker step puts the champion's input: processing/champion.
            target = job.processing_dir / "champion"
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(champion.model_archive, target / "model.tar.gz")
            args += ["--champion-arn", champion.arn]
            self.log(f"  champion {champion.arn} (the newest Approved package)")
        else:
            self.log("  no champion yet (no Approved package): the absolute bar alone decides")
        code = self._run_logged(args, base, self.step_log(spec.STEP_EVALUATE))
        if code != 0:
            raise self.failed(spec.STEP_EVALUATE, exit_reason(code, job.failure_file))
        path = job.evaluation_output / spec.EVALUATION_FILE
        evaluation = json.loads(path.read_text())
        self.log(f"  {path}")
        return {"path": path, "report": evaluation}

    def gate(self) -> str:
        """The gate's metric: box AP, or mask AP for a mask model."""
        return self.gate_metric or spec.gate_metric_for(self.hyperparameters.get("model"))

    def check(self, evaluation: dict) -> None:
        metric = self.gate()
        testing_ap = json_get(evaluation["report"], spec.gate_metric_path(metric))
        threshold = float(self.parameters["MinTestingAP"])
        self.metrics[f"evaluation_{metric}"] = testing_ap
        for other in spec.GATE_METRICS:
            if other != metric and other in evaluation["report"].get("metrics", {}):
                self.metrics[f"evaluation_{other}"] = json_get(evaluation["report"], spec.gate_metric_path(other))
                self.log(f"  {other} {self.metrics[f'evaluation_{other}']:.4f}")
        self.log(f"  {metric} {testing_ap:.4f} >= MinTestingAP {threshold:g}?")
        if not testing_ap >= threshold:
            raise PipelineFailed(f"step {spec.STEP_FAIL}: {spec.fail_message(testing_ap, threshold, metric)}")

    def check_champion(self, evaluation: dict) -> None:
        """The second test: the new model against the champion, on the bar the evaluation step wrote."""
        report = evaluation["report"]
        metric = self.gate()
        testing_ap = json_get(report, spec.gate_metric_path(metric))
        bar = json_get(report, spec.champion_bar_path(metric))
        section = report.get(spec.CHAMPION, {})
        arn = section.get("arn", spec.NO_CHAMPION)
        if arn == spec.NO_CHAMPION:
            self.log(f"  no champion: {metric} {testing_ap:.4f} passes on MinTestingAP alone")
            return
        champion_ap = float(section.get("metrics", {}).get(metric, 0.0))
        max_regression = float(section.get("max_regression", 0.0))
        self.metrics[f"champion_{metric}"] = champion_ap
        self.log(f"  {metric} {testing_ap:.4f} >= champion's {champion_ap:.4f} - MaxRegression {max_regression:g}?")
        if not testing_ap >= bar:
            message = spec.champion_fail_message(testing_ap, champion_ap, max_regression, bar, arn, metric)
            raise PipelineFailed(f"step {spec.STEP_CHAMPION_FAIL}: {message}")

    def register(self, model_archive: Path, evaluation: dict) -> ModelPackage:
        registry = LocalModelRegistry(self.root / "registry")
        package = registry.register(
            MODEL_PACKAGE_GROUP,
            model_archive,
            evaluation["path"],
            approval_status=str(self.parameters["ModelApprovalStatus"]),
            content_types=list(spec.CONTENT_TYPES),
            response_types=list(spec.RESPONSE_TYPES),
            source=f"execution {self.execution_id}",
        )
        self.log(f"  model package {package.arn} ({package.approval_status}) in {package.directory}")
        return package

    def deploy(self, package: ModelPackage, testing: Path) -> None:
        if package.approval_status != "Approved":
            self.log(f"  not deployed: the package is {package.approval_status} (the deploy step only deploys Approved packages)")
            return
        base = self.step_dir(spec.STEP_DEPLOY)
        shutil.rmtree(base, ignore_errors=True)
        prepare_serving(base, package.model_archive)
        port = free_port()
        env = self.backend.environment(base, {"SAGEMAKER_BIND_TO_PORT": str(port), "SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
        log = self.step_log(spec.STEP_DEPLOY)
        with open(log, "w") as log_file:
            self.server = subprocess.Popen(
                self.backend.command(base, ["serve"], port=port), env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        self.wait_healthy(url, timeout=120)
        self.endpoint_url = url
        dataset = load_coco(find_annotation_file(testing, spec.TESTING_CHANNEL), check_files=False)
        image = dataset.image_path(dataset.images[0])
        status, answer = post_json(f"{url}/invocations", image.read_bytes(), "image/png")
        if status != 200:
            error = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise self.failed(spec.STEP_DEPLOY, f"POST /invocations with {image.name} answered HTTP {status}: {error}")
        detections = answer.get("detections", [])
        best = ", ".join(f"{d['label']} {d['score']:.2f}" for d in detections[:3]) or "nothing"
        self.log(f"  endpoint {url}/invocations answered {len(detections)} detections for {image.name} ({best})")
        self.metrics["deploy_detections"] = len(detections)
        (base / "response.json").write_text(json.dumps(answer, indent=2))

    def transform(self, model_archive: Path, testing: Path) -> Path:
        """The optional Transform step: ``detector transform`` scores TransformInput (``testing``: the
        testing channel) with the registered model into ``transform/predictions.jsonl`` (and COCO
        results for a COCO channel). A rerun of the execution (``--resume``) continues where it stopped."""
        value = str(self.parameters["TransformInput"])
        source = testing if value == spec.TESTING_CHANNEL else Path(value)
        if not source.exists():
            raise PipelineFailed(f"step {spec.STEP_TRANSFORM} failed: TransformInput={value}: no such file or folder")
        base = self.step_dir(spec.STEP_TRANSFORM)
        shutil.rmtree(base / "model", ignore_errors=True)
        prepare_serving(base, model_archive)
        output = base / "predictions.jsonl"
        coco = source.is_dir() and any(source.glob("*.json"))
        if self.backend.name == "process":
            inside, source_arg = base, str(source.resolve())
        else:  # a container sees only the step's folder, at /opt/ml: the input is copied into it once
            inside = Path(DEFAULT_BASE_DIR)
            copy = base / "input" / source.name
            if not copy.exists():
                copy.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, copy)
                else:
                    shutil.copyfile(source, copy)
            source_arg = str(inside / "input" / source.name)
        args = ["transform", source_arg, "--output", str(inside / output.name), "--model-dir", str(inside / "model"),
                "--progress", "none"]
        if coco:
            args.append("--coco-results")
        log = self.step_log(spec.STEP_TRANSFORM)
        code = self._run_logged(args, base, log, image=getattr(self.backend, "serve_image", None))
        if code != 0:
            raise self.failed(spec.STEP_TRANSFORM, f"detector transform exited with status {code}; rerun with --resume to retry the rest")
        scored = sum(1 for _ in open(output, "rb"))
        self.log(f"  {scored} images scored into {output}" + (f" (COCO results {output.with_suffix('.coco.json')})" if coco else ""))
        self.metrics["transform_images"] = scored
        return output

    # -- helpers -------------------------------------------------------------------------------

    def wait_healthy(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise self.failed(spec.STEP_DEPLOY, f"detector serve exited with status {self.server.returncode}")
            if ping(url)[0] == 200:
                return
            time.sleep(0.25)
        raise self.failed(spec.STEP_DEPLOY, f"/ping did not answer 200 within {timeout:.0f} s")

    def _run_logged(self, args: list[str], base: Path, log_path: Path, on_line=None, extra_env: dict[str, str] | None = None,
                    image: str | None = None) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", buffering=1) as log:
            process = subprocess.Popen(
                self.backend.command(base, args, image=image), env=self.backend.environment(base, extra_env), stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )
            try:
                for line in process.stdout:
                    log.write(line)
                    if on_line is not None:
                        on_line(line)
                return process.wait()
            except BaseException:
                process.terminate()  # Ctrl-C: the step checkpoints and stops like a Spot reclaim
                try:
                    rest, _ = process.communicate(timeout=130)
                    log.write(rest or "")
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                raise

    def summary(self) -> None:
        self.log("")
        self.log(f"Summary of execution {self.execution_id}")
        for record in self.steps:
            self.log(f"  {record.name:<16} {record.status:<10} {record.seconds:7.1f} s")
        for name in ("training_ap", "testing_ap", "evaluation_testing_ap", "evaluation_testing_mask_ap", "champion_testing_ap",
                     "champion_testing_mask_ap"):
            if name in self.metrics:
                self.log(f"  {name:<22} {self.metrics[name]:.4f}")
        if self.package is not None:
            self.log(f"  model package          {self.package.arn} ({self.package.approval_status})")
        if self.endpoint_url:
            state = "serving (Ctrl-C to stop)" if self.keep_serving else "stopped"
            self.log(f"  endpoint               {self.endpoint_url}/invocations ({state})")
        self.log(f"  total                  {sum(r.seconds for r in self.steps):.1f} s")


def json_get(document: dict, path: str) -> float:
    """What the pipeline's ``JsonGet(property_file, json_path)`` reads."""
    value = document
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise PipelineFailed(f"evaluation.json has no '{path}'")
        value = value[key]
    return float(value)


def _read_reason(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def exit_reason(code: int, failure_file: Path) -> str:
    """What a container command's exit says: its status and the reason it left in its failure file."""
    reason = _read_reason(failure_file)
    return f"exit status {code}: {reason}" if reason else f"exit status {code} (no reason in {failure_file})"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


def post_json(url: str, body: bytes, content_type: str, timeout: float = 60) -> tuple[int, object]:
    """(HTTP status, the decoded JSON answer, or its text when it is not JSON) of a POST."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, f"no answer ({getattr(e, 'reason', e)})"
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode(errors="replace")[:500]


def stop_server(server: subprocess.Popen) -> None:
    import os
    import signal

    if server.poll() is None:
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
