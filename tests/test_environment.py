import json
import os
from pathlib import Path

import pytest

from detector import environment
from detector.environment import ProcessingEnvironment, ServingEnvironment, TrainingEnvironment, write_training_job
from detector.errors import DetectorError


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_defaults_to_opt_ml():
    env = TrainingEnvironment.from_env({"SM_NUM_GPUS": "0"})
    assert env.model_dir == Path("/opt/ml/model")
    assert env.checkpoint_dir == Path("/opt/ml/checkpoints")
    assert env.failure_file == Path("/opt/ml/output/failure")
    assert ProcessingEnvironment.from_env({}).test_input == Path("/opt/ml/processing/test")
    assert ServingEnvironment.from_env({}).model_dir == Path("/opt/ml/model")


def test_reads_the_training_contract_under_a_relocated_root(tmp_path):
    write_training_job(
        tmp_path, {"max_iter": "10", "amp": "true"}, ["training"],
        hosts=["algo-2", "algo-1"], current_host="algo-2", network_interface_name="eth0",
    )
    (tmp_path / "input/data/testing").mkdir(parents=True)
    env = TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_NUM_GPUS": "0"})
    assert env.hyperparameters == {"max_iter": "10", "amp": "true"}
    assert env.channels == {"training": tmp_path / "input/data/training", "testing": tmp_path / "input/data/testing"}
    assert env.hosts == ["algo-1", "algo-2"] and env.host_rank == 1 and not env.is_master_host
    assert env.master_addr == "algo-1"
    assert env.model_dir == tmp_path / "model" and env.checkpoint_dir == tmp_path / "checkpoints"


def test_non_string_hyperparameters_become_strings(tmp_path):
    write(tmp_path / "input/config/hyperparameters.json", {"max_iter": 10, "amp": True})
    env = TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_NUM_GPUS": "0"})
    assert env.hyperparameters == {"max_iter": "10", "amp": "true"}


def test_broken_hyperparameters_file_names_the_file(tmp_path):
    path = tmp_path / "input/config/hyperparameters.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(DetectorError, match="hyperparameters.json: the hyperparameters file is not valid JSON"):
        TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})


def test_current_host_must_be_listed(tmp_path):
    write(tmp_path / "input/config/resourceconfig.json", {"current_host": "algo-9", "hosts": ["algo-1"]})
    with pytest.raises(DetectorError, match="current_host 'algo-9' is not in hosts"):
        TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), "SM_NUM_GPUS": "0"})


def test_serving_settings(tmp_path):
    env = ServingEnvironment.from_env(
        {"SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_WORKERS": "3"}
    )
    assert env.port == 9000 and env.workers == 3 and env.model_dir == tmp_path / "model"
    with pytest.raises(DetectorError, match="SAGEMAKER_BIND_TO_PORT='http': expected a whole number"):
        ServingEnvironment.from_env({"SAGEMAKER_BIND_TO_PORT": "http"})


def test_serving_port_must_be_one_multi_model_server_accepts():
    with pytest.raises(DetectorError, match="SAGEMAKER_BIND_TO_PORT"):
        ServingEnvironment.from_env({"SAGEMAKER_BIND_TO_PORT": "41669"})


def test_child_environments_extend_this_process(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/lib/a")
    monkeypatch.setenv("DETECTOR_DROP", "1")
    assert environment.path_list("PYTHONPATH", "/src") == os.pathsep.join(["/src", "/lib/a"])
    monkeypatch.delenv("PYTHONPATH")
    assert environment.path_list("PYTHONPATH", "/src", "/more") == os.pathsep.join(["/src", "/more"])
    child = environment.environ_with({"SAGEMAKER_BASE_DIR": "/x"}, remove=("DETECTOR_DROP",))
    assert child["SAGEMAKER_BASE_DIR"] == "/x" and "DETECTOR_DROP" not in child and child["PATH"] == os.environ["PATH"]
