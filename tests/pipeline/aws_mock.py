"""The pipeline tests' AWS: every call goes to moto (import the fixture into a test module)."""

import boto3
import pytest
from moto import mock_aws

import settings_example as example


@pytest.fixture
def aws(monkeypatch):
    """A moto-backed SageMaker client; every AWS call in the test goes to moto."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", example.REGION)):
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("sagemaker", region_name=example.REGION)
