"""OTLP export of traces, metrics and logs, switched by the standard ``OTEL_*`` variables.

The OpenTelemetry SDK reads its own variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_EXPORTER_OTLP_*``
endpoints, headers, timeouts and certificates, ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_*``,
``OTEL_SDK_DISABLED``); nothing here re-implements them. The platform only decides
*whether* each signal is exported (docs/observability.md):

- traces: when ``OTEL_TRACES_EXPORTER`` is ``otlp``, or unset and an endpoint is set
  (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or the older
  alias ``PLATFORM_OTLP_ENDPOINT``). Unlike the SDK's auto-configuration, nothing is sent
  to ``localhost:4318`` by default: a process without a collector would log a failed
  export every few seconds. Database (psycopg) and outgoing HTTP (httpx) calls get spans
  only when traces are exported, since nobody would see them otherwise and each costs CPU.
- metrics: only with ``OTEL_METRICS_EXPORTER=otlp``; the Prometheus registry that
  ``/metrics`` serves is sent as it is (same names and labels), beside the SDK's own
  instruments. ``/metrics`` stays the primary interface.
- logs: only with ``OTEL_LOGS_EXPORTER=otlp``; the same redacted messages as stderr.

Only the OTLP/HTTP (protobuf) exporters are installed. A value this process cannot honour
(``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``, ``OTEL_TRACES_EXPORTER=console``) is refused when the
settings load (:func:`unsupported`), never silently replaced by something else.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PrometheusFamily


class ExportSwitches(Protocol):
    """The settings that switch export on (:class:`libs.settings.TelemetrySettings`)."""

    @property
    def otlp_endpoint(self) -> str | None: ...
    @property
    def otel_exporter_otlp_endpoint(self) -> str | None: ...
    @property
    def otel_exporter_otlp_traces_endpoint(self) -> str | None: ...
    @property
    def otel_traces_exporter(self) -> str | None: ...
    @property
    def otel_metrics_exporter(self) -> str | None: ...
    @property
    def otel_logs_exporter(self) -> str | None: ...
    @property
    def otel_service_name(self) -> str | None: ...


# What the installed exporters can do, by standard variable (a gRPC collector port, 4317,
# would receive nothing; "prometheus" metrics are /metrics, served anyway).
PROTOCOLS = frozenset({"http/protobuf"})
SUPPORTED = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": PROTOCOLS,
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": PROTOCOLS,
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": PROTOCOLS,
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": PROTOCOLS,
    "OTEL_TRACES_EXPORTER": frozenset({"otlp", "none"}),
    "OTEL_METRICS_EXPORTER": frozenset({"otlp", "prometheus", "none"}),
    "OTEL_LOGS_EXPORTER": frozenset({"otlp", "none"}),
}

_PROCESS_STARTED_NS = time.time_ns()
_REGISTRY_SCOPE = InstrumentationScope("platform-control-plane.prometheus")


def resource(default_service_name: str) -> Resource:
    """The SDK's resource; ``default_service_name`` only when the standard variables name none."""
    named = SERVICE_NAME in OTELResourceDetector().detect().attributes
    return Resource.create({} if named else {SERVICE_NAME: default_service_name})


def chosen(exporter: str, variable: str | None) -> bool:
    """Whether an ``OTEL_*_EXPORTER`` value (a comma-separated list) names ``exporter``."""
    return exporter in {item.strip().lower() for item in (variable or "").split(",")}


def unsupported(variable: str, value: str | None, supported: frozenset[str]) -> list[str]:
    """The problem, naming ``variable``, when its value (a comma-separated list for the
    exporters) names something this process cannot do; none when unset."""
    named = {item.strip().lower() for item in (value or "").split(",") if item.strip()}
    unknown = sorted(named - supported)
    if not unknown:
        return []
    known = ", ".join(sorted(supported))
    return [f"{variable}: {', '.join(unknown)} is not supported here (supported: {known})"]


def traces_exported(settings: ExportSwitches) -> bool:
    if (settings.otel_traces_exporter or "").strip():
        return chosen("otlp", settings.otel_traces_exporter)
    return bool(
        settings.otel_exporter_otlp_endpoint
        or settings.otel_exporter_otlp_traces_endpoint
        or settings.otlp_endpoint
    )


def span_exporter(settings: ExportSwitches) -> SpanExporter:
    """The OTLP/HTTP span exporter, configured by the SDK from the standard variables; the
    ``PLATFORM_OTLP_ENDPOINT`` alias only fills in the endpoint when they name none."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    standard = settings.otel_exporter_otlp_endpoint or settings.otel_exporter_otlp_traces_endpoint
    if standard or not settings.otlp_endpoint:
        return OTLPSpanExporter()
    endpoint = settings.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint)


def export_traces(provider: TracerProvider, settings: ExportSwitches) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    provider.add_span_processor(BatchSpanProcessor(span_exporter(settings)))
    # Patches psycopg's connect (the pool's connections included) and httpx's clients.
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)


def export_metrics(service_resource: Resource, registry: CollectorRegistry) -> MeterProvider:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    exporter = RegistryExporter(OTLPMetricExporter(), registry, service_resource)
    provider = MeterProvider(
        resource=service_resource, metric_readers=[PeriodicExportingMetricReader(exporter)]
    )
    # An SDK instrument that always has a value: without one the reader finds nothing to
    # collect and never calls the exporter that carries the registry.
    provider.get_meter("platform-control-plane").create_observable_gauge(
        "process.uptime", callbacks=[_uptime], unit="s", description="Seconds since the process started."
    )
    metrics.set_meter_provider(provider)
    return provider


def export_logs(service_resource: Resource, redact: Callable[[str], str]) -> LoggerProvider:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    provider = LoggerProvider(resource=service_resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    logging.getLogger().addHandler(RedactedLoggingHandler(redact, logger_provider=provider))
    return provider


def _uptime(_: CallbackOptions) -> Iterator[Observation]:
    yield Observation((time.time_ns() - _PROCESS_STARTED_NS) / 1e9)


class RedactedLoggingHandler(LoggingHandler):
    """Sends what the JSON lines on stderr say: the redacted message and the extra fields
    as attributes, never a traceback (it can quote DSNs and hosts)."""

    def __init__(self, redact: Callable[[str], str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redact = redact

    def emit(self, record: logging.LogRecord) -> None:
        clean = copy.copy(record)
        clean.msg, clean.args = self.redact(record.getMessage()), None
        clean.exc_info, clean.exc_text, clean.stack_info = None, None, None
        fields = clean.__dict__.pop("fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                setattr(
                    clean,
                    f"platform.{key}",
                    value if isinstance(value, str | int | float | bool) else str(value),
                )
        super().emit(clean)


class RegistryExporter(MetricExporter):
    """Forwards what the SDK collected plus the Prometheus registry, converted to the OTLP
    data model (cumulative sums, gauges and explicit-bucket histograms under their
    Prometheus family names), to ``inner``."""

    def __init__(
        self, inner: MetricExporter, registry: CollectorRegistry, service_resource: Resource
    ) -> None:
        super().__init__()
        self.inner = inner
        self.registry = registry
        self.resource = service_resource

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        scope = ScopeMetrics(_REGISTRY_SCOPE, registry_metrics(self.registry, time.time_ns()), "")
        merged = [*metrics_data.resource_metrics, ResourceMetrics(self.resource, [scope], "")]
        return self.inner.export(MetricsData(merged), timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def registry_metrics(registry: CollectorRegistry, now_ns: int) -> list[Metric]:
    converted = (_convert(family, now_ns) for family in registry.collect())
    return [metric for metric in converted if metric is not None]


def _convert(family: PrometheusFamily, now_ns: int) -> Metric | None:
    data: Sum | Gauge | Histogram
    if family.type == "counter":
        points = _number_points(family, "_total", now_ns)
        data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
    elif family.type == "gauge":
        data = Gauge(_number_points(family, "", now_ns))
    elif family.type == "histogram":
        data = Histogram(_histogram_points(family, now_ns), AggregationTemporality.CUMULATIVE)
    else:
        return None
    return Metric(family.name, family.documentation, family.unit or None, data)


def _number_points(family: PrometheusFamily, suffix: str, now_ns: int) -> list[NumberDataPoint]:
    return [
        NumberDataPoint(dict(sample.labels), _PROCESS_STARTED_NS, now_ns, sample.value)
        for sample in family.samples
        if sample.name == family.name + suffix
    ]


def _histogram_points(family: PrometheusFamily, now_ns: int) -> list[HistogramDataPoint]:
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = defaultdict(lambda: {"buckets": []})
    for sample in family.samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        if sample.name.endswith("_bucket"):
            series[labels]["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith(("_sum", "_count")):
            series[labels][sample.name.rsplit("_", 1)[1]] = sample.value
    return [_histogram_point(dict(labels), parts, now_ns) for labels, parts in series.items()]


def _histogram_point(labels: dict[str, str], parts: dict[str, Any], now_ns: int) -> HistogramDataPoint:
    bounds, cumulative = zip(*sorted(parts["buckets"]), strict=True)
    # Prometheus buckets count everything up to their bound; OTLP buckets count their own range.
    counts = [int(c - previous) for c, previous in zip(cumulative, (0, *cumulative[:-1]), strict=True)]
    return HistogramDataPoint(
        attributes=labels,
        start_time_unix_nano=_PROCESS_STARTED_NS,
        time_unix_nano=now_ns,
        count=int(parts.get("count", sum(counts))),
        sum=parts.get("sum", 0.0),
        bucket_counts=counts,
        explicit_bounds=[bound for bound in bounds if bound != float("inf")],
        # Prometheus histograms keep no minimum or maximum; OTLP leaves both optional.
        min=None,  # type: ignore[arg-type]
        max=None,  # type: ignore[arg-type]
    )
