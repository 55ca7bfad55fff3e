"""CloudWatch alarms the deploy Lambda creates or updates for an endpoint; a blue/green update rolls back
when one of them fires. Part of the deploy Lambda's code."""

from __future__ import annotations

from .endpoint_config import VARIANT, DeploySettings


def alarm_names(endpoint_name: str, settings: DeploySettings) -> list[str]:
    names = [f"{endpoint_name}-invocation-5xx"]
    if settings.latency_alarm_ms > 0:
        names.append(f"{endpoint_name}-model-latency")
    return names


def put_alarms(cloudwatch, settings: DeploySettings) -> list[str]:
    """Create or update (PutMetricAlarm is both) the endpoint's alarms; returns their names."""
    endpoint = settings.endpoint_name
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]
    names = alarm_names(endpoint, settings)
    common = {"Namespace": "AWS/SageMaker", "Dimensions": dimensions, "Period": 60, "TreatMissingData": "notBreaching"}
    cloudwatch.put_metric_alarm(
        AlarmName=names[0],
        AlarmDescription=f"Endpoint {endpoint} answers 5XX errors: a blue/green update rolls back",
        MetricName="Invocation5XXErrors", Statistic="Sum", Threshold=0.0, ComparisonOperator="GreaterThanThreshold",
        EvaluationPeriods=1, **common,
    )
    if settings.latency_alarm_ms > 0:
        cloudwatch.put_metric_alarm(
            AlarmName=names[1],
            AlarmDescription=f"Endpoint {endpoint} model latency above {settings.latency_alarm_ms} ms: a blue/green update rolls back",
            MetricName="ModelLatency", Statistic="Average",
            Threshold=float(settings.latency_alarm_ms * 1000),  # ModelLatency is in microseconds
            ComparisonOperator="GreaterThanThreshold", EvaluationPeriods=2, DatapointsToAlarm=2, **common,
        )
    return names
