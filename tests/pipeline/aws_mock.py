"""The pipeline tests' AWS: every call goes to moto (import the fixture into a test module).

moto 5.2.5 has no ``UpdateEndpoint``; :func:`install_update_endpoint` adds it to moto's SageMaker
responses (botocore still validates the request's shape on the client side): the endpoint switches to
the new configuration and keeps the request's ``DeploymentConfig`` for the test to read.
"""

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sagemaker.models import sagemaker_backends
from moto.sagemaker.responses import SageMakerResponse

import settings_example as example

DEPLOYMENTS: dict[str, list[dict]] = {}  # endpoint name -> UpdateEndpoint requests, oldest first


def _update_endpoint(self):
    name, config_name = self._get_param("EndpointName"), self._get_param("EndpointConfigName")
    backend = self.sagemaker_backend
    endpoint = backend.endpoints[name]
    backend.describe_endpoint_config(config_name)  # raises like SageMaker when it does not exist
    endpoint.endpoint_config_name = config_name
    DEPLOYMENTS.setdefault(name, []).append({"EndpointConfigName": config_name, "DeploymentConfig": self._get_param("DeploymentConfig")})
    from moto.core.responses import ActionResult

    return ActionResult({"EndpointArn": endpoint.arn})


def install_update_endpoint() -> None:
    SageMakerResponse.update_endpoint = _update_endpoint


def set_endpoint_status(name: str, status: str, reason: str | None = None) -> None:
    """Put a moto endpoint in ``status`` (SageMaker moves endpoints between states on its own)."""
    endpoint = sagemaker_backends[DEFAULT_ACCOUNT_ID][example.REGION].endpoints[name]
    endpoint.endpoint_status = status
    endpoint.failure_reason = reason


def age(kind: str, name: str, days: int) -> None:
    """Make a moto model (``_models``) or endpoint config (``endpoint_configs``) ``days`` older."""
    import datetime

    item = getattr(sagemaker_backends[DEFAULT_ACCOUNT_ID][example.REGION], kind)[name]
    item.creation_time = item.creation_time - datetime.timedelta(days=days)


@pytest.fixture
def aws(monkeypatch):
    """A moto-backed SageMaker client; every AWS call in the test goes to moto."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", example.REGION)):
        monkeypatch.setenv(name, value)
    install_update_endpoint()
    DEPLOYMENTS.clear()
    with mock_aws():
        yield boto3.client("sagemaker", region_name=example.REGION)
