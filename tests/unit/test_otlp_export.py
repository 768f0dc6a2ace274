"""When each signal is exported, which service name wins, and how /metrics converts to OTLP."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Sum
from prometheus_client import CollectorRegistry, Counter
from prometheus_client import Gauge as PrometheusGauge
from prometheus_client import Histogram as PrometheusHistogram

from libs import otlp_export
from libs.settings import PlatformSettings, SettingsError, load_settings


def settings(**environ: str) -> PlatformSettings:
    return load_settings(PlatformSettings, environ)


@pytest.mark.parametrize(
    ("environ", "exported"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"PLATFORM_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            True,
        ),
    ],
)
def test_traces_are_exported_when_the_standard_variables_or_the_alias_ask(
    environ: dict[str, str], exported: bool
) -> None:
    assert otlp_export.traces_exported(settings(**environ)) is exported


@pytest.mark.parametrize(
    ("variable", "value", "refused"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "http/json"),
        ("OTEL_TRACES_EXPORTER", "console", "console"),
        ("OTEL_TRACES_EXPORTER", "otlp,zipkin", "zipkin"),
        ("OTEL_METRICS_EXPORTER", "console", "console"),
        ("OTEL_LOGS_EXPORTER", "console", "console"),
    ],
)
def test_what_the_exporters_cannot_do_is_refused_at_start_naming_the_variable(
    variable: str, value: str, refused: str
) -> None:
    """Only OTLP over HTTP exists here: a gRPC protocol or a console exporter would otherwise
    be ignored and the operator left wondering where the spans went."""
    with pytest.raises(SettingsError) as error:
        settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317", **{variable: value})
    [problem] = error.value.problems
    assert problem.startswith(f"{variable}: {refused} is not supported here (supported: ")
    assert ("http/protobuf" in problem) is ("PROTOCOL" in variable)


def test_the_alias_fills_in_the_endpoint_only_when_the_standard_variables_name_none() -> None:
    alias = otlp_export.span_exporter(settings(PLATFORM_OTLP_ENDPOINT="http://collector:4318/"))
    assert alias._endpoint == "http://collector:4318/v1/traces"  # type: ignore[attr-defined]


def test_the_standard_service_name_wins_over_the_platform_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert otlp_export.resource("platform-intake").attributes["service.name"] == "platform-intake"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "intake-eu")
    named = otlp_export.resource("platform-intake").attributes
    assert named["service.name"] == "intake-eu"
    assert named["deployment.environment.name"] == "staging"


def test_the_prometheus_registry_converts_to_cumulative_otlp_metrics() -> None:
    registry = CollectorRegistry()
    handled = Counter("handled", "Events handled.", ["consumer"], registry=registry)
    handled.labels("intake-requests").inc(3)
    PrometheusGauge("backlog", "Rows waiting.", registry=registry).set(7)
    seconds = PrometheusHistogram("handler_seconds", "Time.", buckets=(0.1, 1.0), registry=registry)
    for value in (0.05, 0.5, 0.6, 5.0):
        seconds.observe(value)

    converted = {metric.name: metric for metric in otlp_export.registry_metrics(registry, 2_000)}

    counter = converted["handled"].data
    assert isinstance(counter, Sum)
    assert counter.is_monotonic
    assert counter.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert [(p.attributes, p.value) for p in counter.data_points] == [({"consumer": "intake-requests"}, 3.0)]
    gauge = converted["backlog"].data
    assert isinstance(gauge, Gauge)
    assert [p.value for p in gauge.data_points] == [7.0]
    histogram = converted["handler_seconds"].data
    assert isinstance(histogram, Histogram)
    [point] = histogram.data_points
    # Per-bucket counts (OTLP), not Prometheus' cumulative ones; +Inf is the last bucket.
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert list(point.bucket_counts) == [1, 2, 1]
    assert point.count == 4
    assert point.sum == pytest.approx(6.15)
