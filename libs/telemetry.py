"""Logs, traces and metrics for every process.

- JSON logs, one object per line, always carrying ``service``, ``trace_id`` and
  ``request_id`` (the environment request being worked on, bound with :func:`bind_request`).
- OpenTelemetry tracing; spans are exported over OTLP/HTTP only when an endpoint is set,
  but trace ids exist either way so logs and events correlate.
- W3C trace context travels in NATS headers (:func:`inject_headers` / :func:`extract_context`).
- One Prometheus registry per process (:data:`REGISTRY`) with the kit's shared metrics.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_service_name = "platform"

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_HANDLED = Counter(
    "platform_events_handled_total",
    "Events processed by a consumer, by outcome (ok, duplicate, retry, dead_letter, parked, skipped).",
    ["consumer", "event_type", "outcome"],
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


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def tracer() -> trace.Tracer:
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
    name: str, headers: Mapping[str, str] | None, **attributes: Any
) -> Iterator[trace.Span]:
    """Start a span that continues the trace carried in ``headers``."""
    ctx = extract_context(headers)
    with tracer().start_as_current_span(name, context=ctx, attributes=attributes) as span:
        yield span


class Stopwatch:
    """Monotonic elapsed seconds, for histograms."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
