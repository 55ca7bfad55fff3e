"""The container layout's writer twins: what they lay out, the readers read back identically."""

import json
import tarfile
from pathlib import Path

import pytest

from detector import environment, pipeline_spec as spec
from detector.environment import (
    ProcessingEnvironment,
    ServingEnvironment,
    TrainingEnvironment,
    TrainingLayout,
    prepare_processing_job,
    prepare_serving,
    write_hyperparameters,
    write_training_job,
)


def channel(folder: Path, *files: str) -> Path:
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text(name)
    return folder


def read_env(base: Path | str, **extra: str) -> TrainingEnvironment:
    return TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(base), "SM_NUM_GPUS": "0", **extra})


def test_a_training_job_written_is_read_back_identically(tmp_path):
    source = channel(tmp_path / "source", "annotations.json", "a.png")
    base = write_training_job(
        tmp_path / "job",
        {"max_iter": 10, "amp": True, "learning_rate": "1e-3"},
        {"training": source, "testing": None},
        hosts=["algo-2", "algo-1"],
        current_host="algo-2",
        network_interface_name="eth1",
    )
    assert base == tmp_path / "job"
    env = read_env(base)
    assert env.hyperparameters == {"max_iter": "10", "amp": "True", "learning_rate": "1e-3"}
    assert env.channels == {"training": base / "input/data/training", "testing": base / "input/data/testing"}
    assert sorted(p.name for p in env.channels["training"].iterdir()) == ["a.png", "annotations.json"]
    assert (env.current_host, env.hosts, env.host_rank, env.master_addr) == ("algo-2", ["algo-1", "algo-2"], 1, "algo-1")
    assert env.network_interface_name == "eth1"
    # The files as SageMaker writes them: every hyperparameter a string, the channels declared.
    config = base / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == env.hyperparameters
    assert list(json.loads((config / "inputdataconfig.json").read_text())) == ["training", "testing"]
    assert json.loads((config / "resourceconfig.json").read_text())["hosts"] == ["algo-2", "algo-1"]


def test_a_relative_base_dir_is_written_and_read_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    channel(tmp_path / "data" / "training", "annotations.json")
    base = write_training_job(Path("runs/job"), {"max_iter": "3"}, {"training": Path("data/training")})
    assert base == Path("runs/job")
    env = read_env("runs/job")
    assert env.base_dir == tmp_path / "runs/job" and env.base_dir.is_absolute()
    assert env.channels == {"training": tmp_path / "runs/job/input/data/training"}
    assert (env.channels["training"] / "annotations.json").exists()
    assert env.hyperparameters == {"max_iter": "3"} and env.hosts == ["algo-1"]
    assert env.model_dir == tmp_path / "runs/job/model" and env.failure_file == tmp_path / "runs/job/output/failure"


def test_values_the_toolkit_would_decode_stay_the_strings_written(tmp_path):
    written = {"learning_rate": "1e-3", "amp": "true", "opts": '"quoted"', "seed": "[1, 2]", "model": "null"}
    env = read_env(write_training_job(tmp_path, written))
    assert env.hyperparameters == written


def test_channel_names_only_create_the_folders_and_a_rerun_keeps_the_first_copy(tmp_path):
    source = channel(tmp_path / "source", "first.json")
    base = write_training_job(tmp_path / "job", {}, {"training": source})
    (source / "second.json").write_text("{}")
    write_training_job(base, {"max_iter": "2"}, {"training": source})
    assert sorted(p.name for p in (base / "input/data/training").iterdir()) == ["first.json"]
    assert read_env(base).hyperparameters == {"max_iter": "2"}

    named = write_training_job(tmp_path / "named", {}, ["training", "testing"])
    assert read_env(named).channels == {"training": named / "input/data/training", "testing": named / "input/data/testing"}
    assert all(path.is_dir() for path in read_env(named).channels.values())


def test_the_writer_refuses_a_current_host_that_is_not_listed(tmp_path):
    with pytest.raises(ValueError, match="current_host 'algo-3' is not in hosts"):
        write_training_job(tmp_path, {}, hosts=["algo-1"], current_host="algo-3")


def test_write_hyperparameters_replaces_the_file_with_strings(tmp_path):
    write_training_job(tmp_path, {"max_iter": "3"})
    path = write_hyperparameters(tmp_path, {"max_iter": 4, "amp": False})
    assert path == TrainingLayout(tmp_path).hyperparameters_file
    assert read_env(tmp_path).hyperparameters == {"max_iter": "4", "amp": "False"}


def test_a_processing_job_written_is_where_the_evaluation_step_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"archive")
    test_channel = channel(tmp_path / "testing", "annotations.json")
    written = prepare_processing_job(Path("evaluate"), archive, test_channel)
    env = ProcessingEnvironment.from_env({"SAGEMAKER_BASE_DIR": "evaluate"})
    assert env.model_archive == tmp_path / "evaluate/processing/model/model.tar.gz"
    assert env.model_archive.read_bytes() == b"archive" and written.model_archive.resolve() == env.model_archive
    assert (env.test_input / "annotations.json").read_text() == "annotations.json"
    assert env.evaluation_output == tmp_path / "evaluate/processing/evaluation"
    assert env.evaluation_output.name == spec.EVALUATION_OUTPUT  # the pipeline's output of that name
    assert env.failure_file == tmp_path / "evaluate/output/message"


def test_a_served_model_is_extracted_where_the_hosting_container_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels.json").write_text("{}")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "labels.json", arcname="labels.json")
    model_dir = prepare_serving(Path("deploy"), archive)
    env = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": "deploy"})
    assert env.model_dir == tmp_path / "deploy/model" == model_dir.resolve()
    assert (env.model_dir / "labels.json").read_text() == "{}"


def test_every_path_of_the_layout_is_relative_and_distinct():
    paths = {name: value for name, value in vars(environment).items() if name.isupper() and isinstance(value, Path)}
    assert len(paths) >= 15
    assert all(not path.is_absolute() for path in paths.values())
    assert len(set(paths.values())) == len(paths), "two names for one path"
    assert environment.training_failure_file({"SAGEMAKER_BASE_DIR": "/x"}) == Path("/x") / environment.TRAINING_FAILURE_FILE
