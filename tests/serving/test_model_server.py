
from detector.environment import ServingEnvironment
from detector.serving.model_server import free_port, override_properties, server_properties


def test_override_properties_replaces_and_adds_keys():
    text = "vmargs=-Xmx1g\ninference_address=http://0.0.0.0:8080\nmanagement_address=http://0.0.0.0:8080\n"
    result = override_properties(text, {"management_address": "http://127.0.0.1:9", "max_request_size": "10"})
    assert result.splitlines() == [
        "vmargs=-Xmx1g",
        "inference_address=http://0.0.0.0:8080",
        "management_address=http://127.0.0.1:9",
        "max_request_size=10",
    ]


def test_server_properties_keep_the_server_on_loopback_behind_the_front():
    settings = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": "/x", "SAGEMAKER_BIND_TO_PORT": "8080",
                                            "SAGEMAKER_MODEL_SERVER_WORKERS": "3"})
    properties = server_properties(settings, inference_port=23456, management_port=12345)
    assert properties == {
        "inference_address": "http://127.0.0.1:23456",
        "management_address": "http://127.0.0.1:12345",
        "default_workers_per_model": "3",
        "default_response_timeout_seconds": "50",
        "max_request_size": str(6 * 1024 * 1024),
        "max_response_size": str(100 * 1024 * 1024),
    }


def test_server_properties_follow_the_batch_mode():
    settings = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": "/x", "SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "40",
                                            "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "900"})
    properties = server_properties(settings, inference_port=23456, management_port=12345)
    assert properties["default_response_timeout_seconds"] == "900"
    assert properties["max_request_size"] == str(40 * 1024 * 1024)


def test_the_payload_limit_reaches_the_launcher_and_workers_under_its_own_name():
    """The launcher's environment lacks SAGEMAKER_MAX_PAYLOAD_IN_MB (the toolkit would reject 2.5);
    the limit still reaches it, fractional or not."""
    from detector.environment import PAYLOAD_HANDOVER

    parent = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": "/x", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2.5"})
    child = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": "/x", PAYLOAD_HANDOVER: repr(parent.max_payload_mb)})
    assert child.max_payload_bytes == parent.max_payload_bytes == int(2.5 * 1024 * 1024)


def test_toolkit_config_with_overrides(tmp_path, monkeypatch):
    """The toolkit's generated config, as the launcher patches it."""
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    from sagemaker_inference import environment, model_server

    settings = ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    text = override_properties(
        model_server._generate_mms_config_properties(environment.Environment(), "h:handle"),
        server_properties(settings, 20001, 20000),
    )
    properties = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert properties["management_address"] == "http://127.0.0.1:20000"
    assert properties["inference_address"] == "http://127.0.0.1:20001"
    assert properties["default_service_handler"] == "h:handle"
    assert properties["default_response_timeout_seconds"] == "50"
    assert list(properties).count("management_address") == 1


def test_free_port_is_below_what_multi_model_server_accepts():
    assert 10000 <= free_port() < 32767
