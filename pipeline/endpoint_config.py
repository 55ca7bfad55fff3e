"""What the deploy Lambda asks SageMaker for: the endpoint configuration of each endpoint mode and the
blue/green ``DeploymentConfig`` of an update. Pure functions of :class:`DeploySettings`; no AWS calls.

Part of the deploy Lambda's code (only the standard library and boto3 are available there).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

VARIANT = "AllTraffic"
MODES = ("realtime", "async", "serverless")
TRAFFIC = ("ALL_AT_ONCE", "CANARY", "LINEAR")
MAX_NAME = 63
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)


class DeployError(Exception):
    """The deployment cannot go ahead; the message says why and what to do."""


def _none(value) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.lower() == "none" else text


@dataclass(frozen=True)
class DeploySettings:
    """Everything the Lambda needs besides the package ARN; field names are the event's keys."""

    endpoint_name: str
    role_arn: str
    instance_type: str = "ml.g5.xlarge"
    endpoint_mode: str = "realtime"
    instance_count: int = 1  # the minimum instance count when autoscaling is on
    max_instance_count: int = 1
    invocations_per_instance: float = 0.0  # target tracking target; 0: no autoscaling
    traffic_routing: str = "ALL_AT_ONCE"
    traffic_percent: int = 10  # canary size or linear step, % of capacity
    bake_time_s: int = 300
    latency_alarm_ms: int = 0  # 0: no latency alarm
    data_capture_percent: int = 0
    data_capture_s3: str = ""
    async_output_s3: str = ""
    async_failure_s3: str = ""
    async_max_concurrent: int = 4
    async_success_topic: str = ""
    async_error_topic: str = ""
    serverless_memory_mb: int = 6144
    serverless_max_concurrency: int = 5

    @classmethod
    def from_event(cls, event: dict) -> "DeploySettings":
        missing = [key for key in ("endpoint_name", "role_arn") if not event.get(key)]
        if missing:
            raise DeployError(f"deploy event is missing {', '.join(missing)}; got keys {sorted(event)}")
        values = {}
        for name, field in cls.__dataclass_fields__.items():
            if name not in event or event[name] is None:
                continue
            raw = event[name]
            kind = field.type
            try:
                if kind == "int":
                    number = float(raw)
                    if not number.is_integer():
                        raise ValueError
                    values[name] = int(number)
                elif kind == "float":
                    values[name] = float(raw)
                else:
                    values[name] = _none(raw)
            except (TypeError, ValueError):
                expected = "a whole number" if kind == "int" else "a number"
                raise DeployError(f"{name} {raw!r}: expected {expected}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        def bad(what: str) -> DeployError:
            return DeployError(f"{what} (endpoint {self.endpoint_name})")

        if self.endpoint_mode not in MODES:
            raise bad(f"endpoint_mode {self.endpoint_mode!r}: expected one of {', '.join(MODES)}")
        if self.traffic_routing not in TRAFFIC:
            raise bad(f"traffic_routing {self.traffic_routing!r}: expected one of {', '.join(TRAFFIC)}")
        if not 1 <= self.traffic_percent <= 99:
            raise bad(f"traffic_percent {self.traffic_percent}: expected 1 to 99 (% of the new fleet's capacity per step)")
        if not 0 <= self.bake_time_s <= 3600:
            raise bad(f"bake_time_s {self.bake_time_s}: expected 0 to 3600 s (SageMaker's WaitIntervalInSeconds)")
        if self.instance_count < 1 or self.max_instance_count < self.instance_count:
            raise bad(f"instance counts {self.instance_count}..{self.max_instance_count}: expected 1 <= minimum <= maximum")
        if not 0 <= self.data_capture_percent <= 100:
            raise bad(f"data_capture_percent {self.data_capture_percent}: expected 0 (off) to 100")
        if self.data_capture_percent and not self.data_capture_s3.startswith("s3://"):
            raise bad(f"data_capture_s3 {self.data_capture_s3!r}: expected an s3:// prefix when data capture is on")
        if self.endpoint_mode == "async":
            for name in ("async_output_s3", "async_failure_s3"):
                if not getattr(self, name).startswith("s3://"):
                    raise bad(f"{name} {getattr(self, name)!r}: expected an s3:// prefix for an async endpoint")
            if not 1 <= self.async_max_concurrent <= 1000:
                raise bad(f"async_max_concurrent {self.async_max_concurrent}: expected 1 to 1000 invocations per instance")
        if self.endpoint_mode == "serverless":
            if self.serverless_memory_mb not in SERVERLESS_MEMORY_MB:
                raise bad(f"serverless_memory_mb {self.serverless_memory_mb}: expected one of {', '.join(map(str, SERVERLESS_MEMORY_MB))}")
            if not 1 <= self.serverless_max_concurrency <= 200:
                raise bad(f"serverless_max_concurrency {self.serverless_max_concurrency}: expected 1 to 200")
            if self.data_capture_percent:
                raise bad("data capture is not available on serverless endpoints: set data_capture_percent 0 or use realtime/async")

    @property
    def autoscaling(self) -> bool:
        return self.endpoint_mode != "serverless" and self.invocations_per_instance > 0

    def config_fingerprint(self) -> str:
        """What the endpoint configuration depends on (not alarms, scaling targets or traffic routing)."""
        ignored = {"endpoint_name", "max_instance_count", "invocations_per_instance", "traffic_routing", "traffic_percent",
                   "bake_time_s", "latency_alarm_ms"}
        return json.dumps({k: v for k, v in asdict(self).items() if k not in ignored}, sort_keys=True)


def resource_name(endpoint_name: str, *parts: object) -> str:
    """``<endpoint>-<10 hex digits of the inputs>``, within SageMaker's 63-character limit."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:10]
    return f"{name_prefix(endpoint_name)}{digest}"


def name_prefix(endpoint_name: str) -> str:
    return f"{endpoint_name[: MAX_NAME - 11].rstrip('-')}-"


def endpoint_config_request(settings: DeploySettings, name: str, model_name: str) -> dict:
    """The ``CreateEndpointConfig`` request of ``settings.endpoint_mode``."""
    variant = {"VariantName": VARIANT, "ModelName": model_name}
    if settings.endpoint_mode == "serverless":
        variant["ServerlessConfig"] = {
            "MemorySizeInMB": settings.serverless_memory_mb, "MaxConcurrency": settings.serverless_max_concurrency,
        }
    else:
        variant.update(InitialInstanceCount=settings.instance_count, InstanceType=settings.instance_type)
    request = {"EndpointConfigName": name, "ProductionVariants": [variant]}
    if settings.endpoint_mode == "async":
        output = {"S3OutputPath": settings.async_output_s3, "S3FailurePath": settings.async_failure_s3}
        topics = {k: v for k, v in (("SuccessTopic", settings.async_success_topic), ("ErrorTopic", settings.async_error_topic)) if v}
        if topics:
            output["NotificationConfig"] = topics
        request["AsyncInferenceConfig"] = {
            "OutputConfig": output,
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": settings.async_max_concurrent},
        }
    if settings.data_capture_percent:
        request["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": settings.data_capture_percent,
            "DestinationS3Uri": settings.data_capture_s3,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        }
    return request


def mode_of(config: dict) -> str:
    """The endpoint mode of a ``DescribeEndpointConfig`` answer."""
    if any(v.get("ServerlessConfig") for v in config.get("ProductionVariants", [])):
        return "serverless"
    return "async" if config.get("AsyncInferenceConfig") else "realtime"


def deployment_config(settings: DeploySettings, alarm_names: list[str]) -> dict:
    """Blue/green traffic shifting with a bake time, rolled back when an alarm fires."""
    routing = settings.traffic_routing if settings.endpoint_mode != "serverless" else "ALL_AT_ONCE"
    traffic = {"Type": routing, "WaitIntervalInSeconds": settings.bake_time_s}
    step = {"Type": "CAPACITY_PERCENT", "Value": settings.traffic_percent}
    if routing == "CANARY":
        traffic["CanarySize"] = step
    elif routing == "LINEAR":
        traffic["LinearStepSize"] = step
    config = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": traffic, "TerminationWaitInSeconds": 0}}
    if alarm_names:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in alarm_names]}
    return config
