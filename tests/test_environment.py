import json
import os
import subprocess
import sys
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


@pytest.mark.parametrize("value, expected", [(None, "rle"), ("polygon", "polygon"), ("NONE", "none"), ("rle", "rle")])
def test_serving_mask_format_default(value, expected):
    environ = {} if value is None else {"DETECTOR_MASK_FORMAT": value}
    assert ServingEnvironment.from_env(environ).mask_format == expected


def test_serving_mask_format_must_be_known():
    with pytest.raises(DetectorError, match="DETECTOR_MASK_FORMAT='bitmap': expected one of rle, polygon, none"):
        ServingEnvironment.from_env({"DETECTOR_MASK_FORMAT": "bitmap"})


def test_serving_port_must_be_one_multi_model_server_accepts():
    with pytest.raises(DetectorError, match="SAGEMAKER_BIND_TO_PORT"):
        ServingEnvironment.from_env({"SAGEMAKER_BIND_TO_PORT": "41669"})


# -- The training contract through the sagemaker-training toolkit ---------------------------------------

SRC = Path(__file__).resolve().parents[1] / "src"


def training_env(base: Path, **extra: str) -> TrainingEnvironment:
    return TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(base), "SM_NUM_GPUS": "0", **extra})


def toolkit_reading(base: Path):
    """What the toolkit itself makes of the layout under ``base`` (where the project overrides it)."""
    config = base / "input/config"
    read = lambda name: json.loads((config / name).read_text()) if (config / name).exists() else {}  # noqa: E731
    return environment._interpret_with_toolkit(
        config, read("resourceconfig.json"), read("inputdataconfig.json"), read("hyperparameters.json")
    )


def test_from_env_leaves_os_environ_and_the_base_dir_as_they_were(tmp_path):
    write_training_job(tmp_path, {"max_iter": "3", "sagemaker_job_name": '"job-1"'}, ["training"], hosts=["algo-1", "algo-2"])
    before = dict(os.environ)
    env = training_env(tmp_path)
    assert dict(os.environ) == before  # the toolkit sets CURRENT_HOST, SAGEMAKER_JOB_NAME, SAGEMAKER_REGION
    assert env.hosts == ["algo-1", "algo-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]  # no code/ folder from the toolkit


def test_the_toolkits_first_import_changes_nothing_outside(tmp_path):
    """At import the toolkit sets SAGEMAKER_BASE_DIR and lays a job out in ~/sagemaker_local when it
    finds neither /opt/ml nor that variable, and creates <base>/code: none of that may happen."""
    home, base = tmp_path / "home", tmp_path / "job"
    home.mkdir()
    write_training_job(base, {"max_iter": "3"}, ["training"])
    script = (
        "import json, os, sys\n"
        "before = dict(os.environ)\n"
        "from detector.environment import TrainingEnvironment\n"
        "assert 'sagemaker_training' not in sys.modules\n"
        "env = TrainingEnvironment.from_env({'SAGEMAKER_BASE_DIR': sys.argv[1], 'SM_NUM_GPUS': '0'})\n"
        "assert 'sagemaker_training.environment' in sys.modules\n"
        "changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps({'changed': changed, 'channels': sorted(env.channels)}))\n"
    )
    child_env = {k: v for k, v in os.environ.items() if k != "SAGEMAKER_BASE_DIR"}
    child_env.update(HOME=str(home), PYTHONPATH=str(SRC))
    result = subprocess.run([sys.executable, "-c", script, str(base)], env=child_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"changed": [], "channels": ["training"]}
    assert list(home.iterdir()) == [] and not (base / "code").exists()


def test_hosts_are_sorted_and_the_rendezvous_is_rank_0s_host_whatever_the_toolkit_picks(tmp_path):
    write_training_job(tmp_path, {"sagemaker_distribution_instance_groups": '["gpu"]'}, hosts=["algo-1"])
    environment._write_json(tmp_path / "input/config/resourceconfig.json", {
        "current_host": "algo-2", "hosts": ["algo-3", "algo-1", "algo-2"], "current_group_name": "gpu",
        "instance_groups": [
            {"instance_group_name": "cpu", "instance_type": "ml.c5.xlarge", "hosts": ["algo-1"]},
            {"instance_group_name": "gpu", "instance_type": "ml.g5.xlarge", "hosts": ["algo-3", "algo-2"]},
        ],
    })
    # The toolkit takes the first host of the distribution instance group, as listed.
    assert toolkit_reading(tmp_path).master_hostname == "algo-3"
    env = training_env(tmp_path)
    assert env.hosts == ["algo-1", "algo-2", "algo-3"] and env.host_rank == 1
    assert env.master_addr == "algo-1"
    assert env.hyperparameters == {"sagemaker_distribution_instance_groups": '["gpu"]'}  # not decoded
    assert training_env(tmp_path, DETECTOR_MASTER_ADDR="10.0.0.5").master_addr == "10.0.0.5"


def test_no_network_interface_unless_resourceconfig_names_one(tmp_path):
    write_training_job(tmp_path, {})
    assert toolkit_reading(tmp_path).network_interface_name == "eth0"  # the toolkit's guess
    assert training_env(tmp_path).network_interface_name is None
    write_training_job(tmp_path, {}, network_interface_name="ethwe")
    assert training_env(tmp_path).network_interface_name == "ethwe"
    assert TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path / "empty"), "SM_NUM_GPUS": "0"}).network_interface_name is None


def test_channels_are_the_declared_ones_then_undeclared_folders(tmp_path):
    write_training_job(tmp_path, {}, ["testing"])
    environment._write_json(tmp_path / "input/config/inputdataconfig.json", {"testing": {}, "pretrained": {}})
    (tmp_path / "input/data/extra").mkdir()
    env = training_env(tmp_path)
    data = tmp_path / "input/data"
    assert env.channels == {"testing": data / "testing", "pretrained": data / "pretrained", "extra": data / "extra"}
    assert list(env.channels) == ["testing", "pretrained", "extra"]


def test_gpu_count_is_sm_num_gpus_or_what_torch_can_use(tmp_path):
    assert training_env(tmp_path, SM_NUM_GPUS="4").num_gpus == 4
    assert TrainingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)}).num_gpus == environment._gpu_count()
    with pytest.raises(DetectorError, match="SM_NUM_GPUS='two': expected a whole number"):
        training_env(tmp_path, SM_NUM_GPUS="two")


def test_from_env_is_a_function_of_its_environ(tmp_path):
    write_training_job(tmp_path / "a", {"max_iter": "1"}, hosts=["algo-1", "algo-2"], current_host="algo-2")
    write_training_job(tmp_path / "b", {"max_iter": "2"})
    a, b = training_env(tmp_path / "a"), training_env(tmp_path / "b")
    assert (a.hyperparameters, a.current_host, a.hosts) == ({"max_iter": "1"}, "algo-2", ["algo-1", "algo-2"])
    assert (b.hyperparameters, b.current_host, b.hosts) == ({"max_iter": "2"}, "algo-1", ["algo-1"])
    assert training_env(tmp_path / "a") == a


def test_a_configuration_the_toolkit_cannot_read_is_named(tmp_path):
    write_training_job(tmp_path, {})
    environment._write_json(tmp_path / "input/config/resourceconfig.json",
                            {"current_host": "algo-1", "hosts": ["algo-1"], "instance_groups": [{"hosts": ["algo-1"]}]})
    with pytest.raises(DetectorError, match=r"input/config: the sagemaker-training toolkit cannot read .*KeyError"):
        training_env(tmp_path)


def test_a_missing_aws_profile_does_not_fail_training(tmp_path, monkeypatch):
    """The toolkit asks boto3 for the region (unused here), which raises for a profile that is not configured."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    write_training_job(tmp_path, {})
    assert training_env(tmp_path).hosts == ["algo-1"]
    assert os.environ["AWS_PROFILE"] == "no-such-profile"


def test_without_the_toolkit_training_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sagemaker_training", None)
    monkeypatch.setitem(sys.modules, "sagemaker_training.environment", None)
    with pytest.raises(DetectorError, match=r"sagemaker-training toolkit is not installed .*detector\[train\]"):
        training_env(tmp_path)


def test_child_environments_extend_this_process(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/lib/a")
    monkeypatch.setenv("DETECTOR_DROP", "1")
    assert environment.path_list("PYTHONPATH", "/src") == os.pathsep.join(["/src", "/lib/a"])
    monkeypatch.delenv("PYTHONPATH")
    assert environment.path_list("PYTHONPATH", "/src", "/more") == os.pathsep.join(["/src", "/more"])
    child = environment.environ_with({"SAGEMAKER_BASE_DIR": "/x"}, remove=("DETECTOR_DROP",))
    assert child["SAGEMAKER_BASE_DIR"] == "/x" and "DETECTOR_DROP" not in child and child["PATH"] == os.environ["PATH"]
