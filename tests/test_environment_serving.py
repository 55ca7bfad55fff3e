from pathlib import Path

import pytest

from detector.environment import ServingEnvironment
from detector.errors import DetectorError


def test_serving_defaults(tmp_path):
    env = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    assert env.model_dir == tmp_path / "model"
    assert (env.port, env.response_timeout_s, env.max_payload_bytes) == (8080, 50, 6 * 1024 * 1024)
    assert (env.score_threshold, env.max_detections, env.max_batch_images) == (0.5, 100, 32)
    assert env.default_accept == "application/json" and env.runtime_dir is None


def test_serving_settings_from_environment(tmp_path):
    env = ServingEnvironment.from_env({
        "SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "20", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5",
        "DETECTOR_SCORE_THRESHOLD": "0.2", "DETECTOR_MAX_DETECTIONS": "7", "DETECTOR_MAX_BATCH_IMAGES": "4",
        "DETECTOR_SERVE_RUNTIME_DIR": "/run/x",
    })
    assert (env.port, env.workers, env.response_timeout_s, env.max_payload_bytes) == (9000, 2, 20, 512 * 1024)
    assert (env.score_threshold, env.max_detections, env.max_batch_images) == (0.2, 7, 4)
    assert env.runtime_dir == Path("/run/x")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0", "expected a value at least 1"),
        ("SAGEMAKER_BIND_TO_PORT", "70000", "between 1 and 32766"),
        ("DETECTOR_SCORE_THRESHOLD", "2", "between 0.0 and 1.0"),
        ("DETECTOR_MAX_DETECTIONS", "many", "expected a whole number"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", "0", "at least 1"),
    ],
)
def test_bad_serving_settings_name_the_variable(tmp_path, name, value, message):
    with pytest.raises(DetectorError, match=name) as error:
        ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), name: value})
    assert message in str(error.value)


def test_serving_and_processing_need_no_training_toolkit(tmp_path):
    """The serve image does not install sagemaker-training: its environment, the server and the
    evaluation step's environment must not import it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['sagemaker_training'] = None  # importing it now fails\n"
        "from detector.environment import ProcessingEnvironment, ServingEnvironment\n"
        "import detector.commands.serve, detector.serving.model_server, detector.serving.options\n"
        "env = ServingEnvironment.from_env({'SAGEMAKER_BASE_DIR': sys.argv[1]})\n"
        "print(env.model_dir, ProcessingEnvironment.from_env({'SAGEMAKER_BASE_DIR': sys.argv[1]}).test_input)\n"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "model"), str(tmp_path / "processing" / "test")]


def test_precision_defaults_to_auto_and_is_checked():
    from detector.environment import ProcessingEnvironment

    assert ServingEnvironment.from_env({}).precision == "auto"
    assert ServingEnvironment.from_env({"DETECTOR_PRECISION": "FP32"}).precision == "fp32"
    assert ProcessingEnvironment.from_env({"DETECTOR_PRECISION": "bf16"}).precision == "bf16"
    with pytest.raises(DetectorError, match=r"DETECTOR_PRECISION='half': expected one of auto, fp32, bf16, fp16"):
        ServingEnvironment.from_env({"DETECTOR_PRECISION": "half"})


def test_serving_modes_set_the_defaults_of_the_limits(tmp_path):
    realtime = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    batch = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_BATCH": "true"})
    asynchronous = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), "DETECTOR_SERVING_MODE": "async"})
    assert (realtime.mode, realtime.offline, realtime.max_payload_mb, realtime.response_timeout_s) == ("realtime", False, 6.0, 50)
    assert realtime.max_image_pixels == 40_000_000
    assert (batch.mode, batch.offline, batch.max_payload_mb, batch.response_timeout_s) == ("batch", True, 100.0, 3600)
    assert (asynchronous.mode, asynchronous.max_payload_mb, asynchronous.response_timeout_s) == ("async", 1024.0, 3600)
    assert batch.max_image_pixels > 8000 * 6000 > realtime.max_image_pixels
    assert (batch.batch_strategy, batch.max_concurrent_transforms) == ("MULTI_RECORD", None)


def test_transform_job_settings_from_environment(tmp_path):
    env = ServingEnvironment.from_env({
        "SAGEMAKER_BASE_DIR": str(tmp_path), "SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "50",
        "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "1800",
    })
    assert (env.max_payload_bytes, env.max_concurrent_transforms, env.batch_strategy, env.response_timeout_s) == (
        50 * 1024 * 1024, 2, "SINGLE_RECORD", 1800)
    # The API's spelling is accepted too; an explicit mode wins over SAGEMAKER_BATCH.
    assert ServingEnvironment.from_env({"SAGEMAKER_BATCH_STRATEGY": "MultiRecord"}).batch_strategy == "MULTI_RECORD"
    assert ServingEnvironment.from_env({"SAGEMAKER_BATCH": "true", "DETECTOR_SERVING_MODE": "realtime"}).mode == "realtime"


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "101"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB=101.0: expected a value between 0.001 and 100"),
        ({"DETECTOR_SERVING_MODE": "async", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2048"}, "between 0.001 and 1024"),
        ({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "7200"}, "between 1 and 3600"),
        ({"SAGEMAKER_BATCH": "maybe"}, "SAGEMAKER_BATCH='maybe': expected true or false"),
        ({"DETECTOR_SERVING_MODE": "serverless"}, "DETECTOR_SERVING_MODE='serverless': expected one of realtime, batch, async"),
        ({"SAGEMAKER_BATCH_STRATEGY": "ALL"}, "SAGEMAKER_BATCH_STRATEGY='ALL': expected one of SINGLE_RECORD, MULTI_RECORD"),
        ({"SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "0"}, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=0: expected a value at least 1"),
    ],
)
def test_bad_batch_settings_name_the_variable(tmp_path, environ, message):
    with pytest.raises(DetectorError) as error:
        ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path), **environ})
    assert message in str(error.value)
