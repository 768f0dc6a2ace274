"""Logs, traces and metrics for every process.

- JSON logs, one object per line, always carrying ``service``, ``trace_id`` and
  ``request_id`` (the environment request being worked on, bound with :func:`bind_request`).
- OpenTelemetry tracing; spans are exported over OTLP/HTTP only when the standard
  ``OTEL_*`` variables (or ``PLATFORM_OTLP_ENDPOINT``) ask for it (:mod:`libs.otlp_export`),
  but trace ids exist either way so logs and events correlate.
- W3C trace context travels in NATS headers (:func:`inject_headers` / :func:`extract_context`).
- One Prometheus registry per process (:data:`REGISTRY`) with the kit's shared metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from libs import otlp_export

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_service_name = "platform"

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_HANDLED = Counter(
    "platform_events_handled_total",
    "Events processed by a consumer, by outcome (ok, duplicate, retry, dead_letter, parked, skipped).",
    ["consumer", "event_type", "outcome"],
    registry=REGISTRY,
)
EVENTS_REDELIVERED = Counter(
    "platform_events_redelivered_total",
    "Deliveries of an event after its first (a retry, a lapsed lease, a restart), by consumer and type.",
    ["consumer", "event_type"],
    registry=REGISTRY,
)
EVENTS_REPLAYED = Counter(
    "platform_events_replayed_total",
    "Stream events an operator replayed to a consumer, by outcome (re_executed, skipped).",
    ["consumer", "event_type", "outcome"],
    registry=REGISTRY,
)
REPLAY_EVENTS_DROPPED = Counter(
    "platform_replay_events_dropped_total",
    "Events a re-executed handler staged during a replay and that were not published (the "
    "first run published them).",
    ["service", "event_type"],
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "platform_event_handler_seconds",
    "Time to handle one event including its transaction.",
    ["consumer", "event_type"],
    registry=REGISTRY,
)
CONSUMER_PENDING = Gauge(
    "platform_consumer_pending_messages",
    "Messages in the stream not yet delivered to this consumer (lag).",
    ["consumer"],
    registry=REGISTRY,
)
CONSUMER_RECREATED = Counter(
    "platform_consumer_recreated_total",
    "Durable consumers (or the stream) found missing on the server and recreated from code.",
    ["consumer", "what"],
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "platform_outbox_published_total", "Outbox rows published to JetStream.", registry=REGISTRY
)
OUTBOX_BACKLOG = Gauge(
    "platform_outbox_backlog", "Unpublished outbox rows seen by the last relay pass.", registry=REGISTRY
)
OUTBOX_OLDEST_AGE = Gauge(
    "platform_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", registry=REGISTRY
)
OUTBOX_QUARANTINED = Counter(
    "platform_outbox_quarantined_total",
    "Outbox rows set aside because JetStream refuses them for good (too large, no stream for the subject).",
    registry=REGISTRY,
)
OUTBOX_QUARANTINED_ROWS = Gauge(
    "platform_outbox_quarantined_rows",
    "Quarantined outbox rows waiting for an operator (listed by the dead-letter verbs, kind outbox).",
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "platform_rpc_seconds",
    "RPC endpoint latency by verb and outcome code.",
    ["service", "verb", "code"],
    registry=REGISTRY,
)
# Replies that could not be sent (over the server's max_payload, or a publish error); the
# caller got a small error instead. A verb that keeps growing here needs a smaller page.
RPC_REPLIES_NOT_SENT = Counter(
    "platform_rpc_replies_not_sent_total",
    "RPC replies that could not be sent (too large for the bus, or a publish error).",
    ["service", "verb"],
    registry=REGISTRY,
)


def bind_request(request_id: str | None) -> contextvars.Token[str | None]:
    """Attach an environment request id to every log line of the current task."""
    return _request_id.set(request_id)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x")


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>]+", re.IGNORECASE)
_QUOTED_HOST = re.compile(r'(server at|host|hostaddr|address)\s+"[^"]*"', re.IGNORECASE)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_PORT = re.compile(r"\bport\s+\d+", re.IGNORECASE)
_KEY_VALUE_SECRET = re.compile(
    r"\b(password|passwd|token|secret|authorization)\s*[=:]\s*(bearer\s+|basic\s+)?\S+", re.IGNORECASE
)


def redact(text: str) -> str:
    """Remove what log lines must never carry: URLs (DSNs, remotes), hosts, ports, secrets.

    Our own messages do not contain these; libraries' messages (connection errors) do.
    """
    text = _URL.sub("<url>", text)
    text = _QUOTED_HOST.sub(r"\1 <host>", text)
    text = _IPV4.sub("<address>", text)
    text = _PORT.sub("port <port>", text)
    return _KEY_VALUE_SECRET.sub(r"\1=<redacted>", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra ``fields`` passed via ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": _service_name,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "trace_id": current_trace_id(),
            "request_id": _request_id.get(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            payload.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and message only: tracebacks can carry DSNs and hosts.
            payload["error_type"] = record.exc_info[0].__name__
        return json.dumps(payload, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    global _service_name  # noqa: PLW0603 - the process has exactly one service name
    _service_name = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access logs and library chatter drown the domain log lines.
    for noisy in ("uvicorn.access", "nats", "httpx", "git.cmd"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


_exporting: list[Any] = []


def configure_telemetry(default_service_name: str, settings: otlp_export.ExportSwitches) -> None:
    """Tracing for this process, and OTLP export of the signals the ``OTEL_*`` variables ask
    for (:mod:`libs.otlp_export`). Call after :func:`configure_logging`: OTLP logs add a
    handler beside the JSON one."""
    service_resource = otlp_export.resource(settings.otel_service_name or default_service_name)
    # The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on when unset).
    provider = TracerProvider(resource=service_resource)
    if otlp_export.traces_exported(settings):
        otlp_export.export_traces(provider, settings)
    trace.set_tracer_provider(provider)
    _exporting.append(provider)
    if otlp_export.chosen("otlp", settings.otel_metrics_exporter):
        _exporting.append(otlp_export.export_metrics(service_resource, REGISTRY))
    if otlp_export.chosen("otlp", settings.otel_logs_exporter):
        _exporting.append(otlp_export.export_logs(service_resource, redact))


def shutdown_telemetry() -> None:
    """Flush and stop every exporter :func:`configure_telemetry` started."""
    while _exporting:
        _exporting.pop().shutdown()


@functools.cache
def tracer() -> trace.Tracer:
    """The process's tracer. Asked for once: ``get_tracer`` builds a scope and installs a
    warnings filter on every call (2 % of intake's CPU when it was asked per span). One taken
    before :func:`configure_telemetry` is the API's proxy, which follows the provider set later."""
    return trace.get_tracer("platform-control-plane")


def inject_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``headers`` plus the current W3C trace context (``traceparent``/``tracestate``)."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(headers or {}))


@contextlib.contextmanager
def span_from_headers(
    name: str,
    headers: Mapping[str, str] | None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    **attributes: Any,
) -> Iterator[trace.Span]:
    """Start a span that continues the trace carried in ``headers``; ``attributes`` use the
    OpenTelemetry semantic conventions' names where one exists (docs/observability.md)."""
    ctx = extract_context(headers)
    with tracer().start_as_current_span(name, context=ctx, kind=kind, attributes=attributes) as span:
        yield span


def table_gauge(name: str, documentation: str, label: str) -> Gauge:
    """A gauge of facts read from a service's own tables, one series per ``label`` value:
    recomputed on a loop (:func:`refresh_every`) and replaced whole (:func:`replace_samples`)."""
    return Gauge(name, documentation, [label], registry=REGISTRY)


def replace_samples(gauge: Gauge, samples: Iterable[tuple[Sequence[str], float]]) -> None:
    """Make ``samples`` (label values, value) the gauge's only series.

    Series absent from ``samples`` disappear instead of keeping a stale value. Nothing
    awaits between the clear and the last set, so a scrape never sees the gauge half-filled.
    """
    gauge.clear()
    for labels, value in samples:
        gauge.labels(*labels).set(value)


# How often gauges computed from a service's own tables are recomputed: cheap queries,
# fresh enough for dashboards and for alerts that wait minutes anyway.
DATABASE_GAUGES_SECONDS = 10.0


METRICS_REFRESHED = Gauge(
    "platform_metrics_refresh_last_success_timestamp_seconds",
    "Unix time the gauges read from this service's database were last recomputed (0 until the "
    "first time): while it ages, those gauges show old values.",
    ["service"],
    registry=REGISTRY,
)


def refresh_every(
    refresh: Callable[[], Awaitable[None]], interval: float = DATABASE_GAUGES_SECONDS
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background loop (:meth:`libs.service_kit.ServiceKit.background`) that calls
    ``refresh`` now and every ``interval`` seconds until stopping.

    A failed refresh leaves the last values and never ends the loop; it is logged once when
    refreshes start failing and once when they recover (not every ``interval``), and
    :data:`METRICS_REFRESHED` stops moving, which is what the stale-metrics alert watches.
    """

    async def loop(stopping: asyncio.Event) -> None:
        log = logging.getLogger(__name__)
        refreshed = METRICS_REFRESHED.labels(_service_name)
        failing = False
        while not stopping.is_set():
            try:
                await refresh()
            except Exception as exc:
                if not failing:
                    log.warning(
                        "metrics refresh failing; the database gauges keep their last values",
                        extra={"fields": {"error_type": type(exc).__name__}},
                    )
                failing = True
            else:
                refreshed.set(time.time())
                if failing:
                    log.info("metrics refresh recovered")
                failing = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)

    return loop


class Stopwatch:
    """Monotonic elapsed seconds, for histograms."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
