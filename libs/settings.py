"""Typed, read-once settings from ``PLATFORM_*`` environment variables.

Every process builds exactly one settings object at start-up with :func:`load_settings`.
A field is declared with :func:`setting`, which names its environment variable and
documents it. Secrets also accept ``<NAME>_FILE`` (the file's content, stripped of the
trailing newline); an unreadable file is a start-up error, never a silent fallback.
A value that does not parse is a start-up error naming the variable. All problems are
collected and reported together so an operator fixes them in one round.

No other module reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


class SettingsError(Exception):
    """Start-up configuration is invalid; the message names every offending variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


def setting(env: str, default: Any = MISSING, *, doc: str, secret: bool = False) -> Any:
    """Declare a settings field bound to environment variable ``env``."""
    metadata = {"env": env, "doc": doc, "secret": secret}
    if isinstance(default, list):
        items = tuple(default)
        return field(default_factory=lambda: list(items), metadata=metadata)
    if isinstance(default, dict):
        pairs = tuple(default.items())
        return field(default_factory=lambda: dict(pairs), metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {raw!r}")


def _parse(raw: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.strip() == "":
            return None
        return _parse(raw, inner[0])
    if annotation is bool:
        return parse_bool(raw)
    if annotation is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if annotation is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if annotation is Path:
        return Path(raw.strip()).expanduser()
    if origin is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if origin is dict:
        pairs: dict[str, str] = {}
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
            pairs[key.strip()] = value.strip()
        return pairs
    return raw


def _read_secret_file(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().rstrip("\n")


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` (a dataclass of :func:`setting` fields) from the environment.

    Raises :class:`SettingsError` listing every variable that is unreadable or does not parse.
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = spec.metadata.get("env")
        if name is None:
            continue
        raw: str | None = env.get(name)
        file_var = f"{name}_FILE"
        if spec.metadata.get("secret") and env.get(file_var):
            if raw is not None:
                problems.append(f"{name} and {file_var} are both set; set only one")
                continue
            try:
                raw = _read_secret_file(env[file_var])
            except OSError as exc:
                problems.append(f"{file_var}: cannot read the file ({exc.strerror or 'unreadable'})")
                continue
        if raw is None:
            continue
        if not raw.strip() and typing.get_origin(hints[spec.name]) in (list, dict):
            # An empty list or mapping is never a useful setting (an empty algorithm allow-list
            # would refuse every token); empty is how Helm values and compose files leave a
            # variable unset, so it means the default.
            continue
        try:
            values[spec.name] = _parse(raw, hints[spec.name])
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    missing = [
        spec.metadata["env"]
        for spec in dataclasses.fields(cls)  # type: ignore[arg-type]
        if "env" in spec.metadata
        and spec.name not in values
        and spec.default is MISSING
        and spec.default_factory is MISSING
    ]
    problems.extend(f"{name} is required" for name in missing)
    if problems:
        raise SettingsError(problems)
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        extra = validate()
        if extra:
            raise SettingsError(list(extra))
    return instance


def describe_settings(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every field: used by ``platformd config`` and the docs."""
    rows = []
    for spec in dataclasses.fields(cls):
        if "env" not in spec.metadata:
            continue
        if spec.default is not MISSING:
            default = "" if spec.default is None else str(spec.default)
        elif spec.default_factory is not MISSING:
            default = ",".join(map(str, spec.default_factory()))
        else:
            default = "(required)"
        if spec.metadata.get("secret") and not _harmless_default(default):
            default = "(secret)"
        rows.append((spec.metadata["env"], default, spec.metadata["doc"]))
    return rows


def _harmless_default(default: str) -> bool:
    """A secret's default that holds no secret, so it is shown as it is: none at all, or
    URLs without credentials (``nats://127.0.0.1:4222``). Anything else, such as a
    development signing key, is shown as ``(secret)``."""
    if not default:
        return True
    for part in default.split(","):
        try:
            url = urlsplit(part.strip())
            credentials = url.username or url.password
        except ValueError:  # not a URL at all (an unbalanced "[", a bad port)
            return False
        # A query or fragment may carry a token (``?password=``); only bare URLs are shown.
        if not (url.scheme and url.netloc) or credentials or url.query or url.fragment:
            return False
    return True


@dataclass(frozen=True)
class PlatformSettings:
    """Settings every platform process shares: bus, database, telemetry, runtime."""

    service_name: str = setting("PLATFORM_SERVICE_NAME", "platform", doc="Name used in logs and metrics.")
    environment: str = setting(
        "PLATFORM_ENV", "dev", doc="Deployment environment; `prod` implies strict mode."
    )
    strict_production: bool = setting(
        "PLATFORM_STRICT_PRODUCTION", False, doc="Refuse to start with weak or missing security settings."
    )
    nats_url: str = setting(
        "PLATFORM_NATS_URL", "nats://127.0.0.1:4222", doc="NATS server URL(s), comma separated.", secret=True
    )
    postgres_dsn: str | None = setting(
        "PLATFORM_POSTGRES_DSN", None, doc="Postgres connection string (libpq URI or key=value).", secret=True
    )
    postgres_pool_max: int = setting(
        "PLATFORM_POSTGRES_POOL_MAX",
        10,
        doc="Connections per process; also how many RPC calls a process serves at once (each "
        "holds one connection, more would only queue for the pool).",
    )
    rpc_handler_timeout_seconds: float = setting(
        "PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS",
        4.0,
        doc="An RPC call not answered this long after it arrived is cancelled (its transaction "
        "rolls back) and answered unavailable; keep it below the gateway's "
        "PLATFORM_RPC_TIMEOUT_SECONDS (5), so a caller that gave up never sees its command commit later.",
    )
    postgres_pool_wait_seconds: float = setting(
        "PLATFORM_POSTGRES_POOL_WAIT_SECONDS",
        3.0,
        doc="Longest wait for a free pool connection before the call fails as unavailable; "
        "keep it below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS.",
    )
    postgres_statement_timeout_seconds: float = setting(
        "PLATFORM_POSTGRES_STATEMENT_TIMEOUT_SECONDS",
        30.0,
        doc="Server-side limit of one statement; a server that has not answered 2 s after it is "
        "taken for dead and the connection dropped.",
    )
    postgres_lock_timeout_seconds: float = setting(
        "PLATFORM_POSTGRES_LOCK_TIMEOUT_SECONDS", 10.0, doc="Longest wait for a row or table lock."
    )
    postgres_idle_in_transaction_timeout_seconds: float = setting(
        "PLATFORM_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
        60.0,
        doc="A session idle inside an open transaction this long is ended by the server (its locks released).",
    )
    postgres_connect_timeout_seconds: float = setting(
        "PLATFORM_POSTGRES_CONNECT_TIMEOUT_SECONDS", 10.0, doc="Limit for opening one connection."
    )
    nats_ping_interval_seconds: float = setting(
        "PLATFORM_NATS_PING_INTERVAL_SECONDS",
        5.0,
        doc="Client pings to the NATS server; three unanswered intervals mark the connection "
        "dead and start a reconnect.",
    )
    auto_migrate: bool = setting("PLATFORM_AUTO_MIGRATE", False, doc="Apply pending migrations on start.")
    stream_name: str = setting(
        "PLATFORM_EVENTS_STREAM", "PLATFORM_EVENTS", doc="JetStream stream for events."
    )
    subject_prefix: str = setting(
        "PLATFORM_EVENTS_SUBJECT_PREFIX", "platform.events", doc="Subject prefix of domain events."
    )
    rpc_prefix: str = setting(
        "PLATFORM_RPC_SUBJECT_PREFIX", "platform.rpc", doc="Subject prefix of RPC endpoints."
    )
    stream_max_age_days: float = setting(
        "PLATFORM_EVENTS_MAX_AGE_DAYS",
        30.0,
        doc="Event retention for replay; 0 keeps events for ever (allowed only with "
        "PLATFORM_RETENTION_INTERVAL_SECONDS=0, as inbox ids must then be kept for ever too).",
    )
    stream_replicas: int = setting("PLATFORM_EVENTS_REPLICAS", 1, doc="Stream replicas (3 in production).")
    stream_duplicate_window_seconds: float = setting(
        "PLATFORM_EVENTS_DUPLICATE_WINDOW_SECONDS",
        900.0,
        doc="Server-side dedup window; must exceed the relay's worst retry gap.",
    )
    consumer_max_attempts: int = setting(
        "PLATFORM_RECONCILE_MAX_ATTEMPTS", 5, doc="Deliveries of one event before it is dead-lettered."
    )
    consumer_backoff_seconds: float = setting(
        "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS", 1.0, doc="First retry delay; doubles per attempt."
    )
    consumer_max_backoff_seconds: float = setting(
        "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS", 60.0, doc="Upper bound of the retry delay."
    )
    consumer_ack_wait_seconds: float = setting(
        "PLATFORM_RECONCILE_TIMEOUT_SECONDS", 30.0, doc="Lease of one delivery (kept alive while working)."
    )
    consumer_concurrency: int = setting(
        "PLATFORM_RECONCILE_WORKERS", 8, doc="Events handled concurrently per consumer."
    )
    consumer_retry_for_seconds: float = setting(
        "PLATFORM_RECONCILE_RETRY_FOR_SECONDS",
        3600.0,
        doc="How long an event whose handler cannot reach a dependency (network, timeout, 5xx, "
        "database down) keeps being retried, counted in backoff time; other errors are "
        "dead-lettered after PLATFORM_RECONCILE_MAX_ATTEMPTS.",
    )
    consumer_handler_timeout_seconds: float | None = setting(
        "PLATFORM_RECONCILE_HANDLER_TIMEOUT_SECONDS",
        None,
        doc="A handler running longer is cancelled (its transaction rolls back, the event is "
        "retried); default 10 x PLATFORM_RECONCILE_TIMEOUT_SECONDS.",
    )
    consumer_start_lookback_seconds: float = setting(
        "PLATFORM_CONSUMER_START_LOOKBACK_SECONDS",
        300.0,
        doc="A consumer created for the first time starts with the events of this many seconds "
        "back (0: only new ones), never with the whole retained history.",
    )
    jetstream_startup_timeout_seconds: float = setting(
        "PLATFORM_JETSTREAM_STARTUP_TIMEOUT_SECONDS",
        60.0,
        doc="How long start-up retries JetStream API calls while the broker elects leaders.",
    )
    outbox_poll_seconds: float = setting(
        "PLATFORM_OUTBOX_POLL_SECONDS", 1.0, doc="Relay polling interval (NOTIFY wakes it sooner)."
    )
    outbox_quarantine_after: int = setting(
        "PLATFORM_OUTBOX_QUARANTINE_AFTER",
        5,
        doc="Refusals of one outbox row by JetStream (too large, no stream for its subject, a 4xx "
        "answer) before the relay sets it aside as a dead letter of kind outbox; timeouts and "
        "lost connections never count.",
    )
    retention_interval_seconds: float = setting(
        "PLATFORM_RETENTION_INTERVAL_SECONDS",
        3600.0,
        doc="How often old rows are pruned (published outbox rows, inbox ids, replayed dead "
        "letters, the service's own records); 0 turns pruning off.",
    )
    retention_batch_size: int = setting(
        "PLATFORM_RETENTION_BATCH_SIZE", 1000, doc="Rows deleted per transaction while pruning."
    )
    retention_outbox_days: float = setting(
        "PLATFORM_RETENTION_OUTBOX_DAYS", 7.0, doc="Published outbox rows are kept this long."
    )
    retention_inbox_days: float = setting(
        "PLATFORM_RETENTION_INBOX_DAYS",
        35.0,
        doc="Ids of handled events are kept this long; must exceed PLATFORM_EVENTS_MAX_AGE_DAYS, "
        "or a replay of an event still in the stream would be applied twice.",
    )
    retention_dead_letters_days: float = setting(
        "PLATFORM_RETENTION_DEAD_LETTERS_DAYS",
        30.0,
        doc="Replayed dead letters are kept this long; open ones until an operator acts.",
    )
    retention_service_records_days: float = setting(
        "PLATFORM_RETENTION_SERVICE_RECORDS_DAYS",
        35.0,
        doc="Service records whose use is over: renderer bundles, cluster-bootstrapper's "
        "applied-object records of torn-down or superseded environments.",
    )
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9100", doc="host:port for /healthz, /readyz and /metrics."
    )
    shutdown_timeout_seconds: float = setting(
        "PLATFORM_SHUTDOWN_TIMEOUT_SECONDS", 20.0, doc="Drain time for in-flight work on SIGTERM."
    )
    log_level: str = setting("PLATFORM_LOG_LEVEL", "INFO", doc="Log level.")
    otlp_endpoint: str | None = setting(
        "PLATFORM_OTLP_ENDPOINT", None, doc="OTLP/HTTP collector URL; tracing export is off when unset."
    )
    otel_service_name: str | None = setting(
        "PLATFORM_OTEL_SERVICE_NAME", None, doc="Service name in traces; OTEL_SERVICE_NAME wins."
    )
    # Standard OpenTelemetry variables: the SDK reads them itself (with their siblings:
    # headers, timeouts, sampler, resource); they are read here only to decide whether
    # each signal is exported at all (docs/observability.md).
    otel_exporter_otlp_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT", None, doc="Standard OTLP/HTTP base URL; set, traces are exported."
    )
    otel_exporter_otlp_traces_endpoint: str | None = setting(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None, doc="Standard traces URL; set, traces are exported."
    )
    otel_traces_exporter: str | None = setting(
        "OTEL_TRACES_EXPORTER", None, doc="Standard: otlp or none; unset, otlp when an endpoint is set."
    )
    otel_metrics_exporter: str | None = setting(
        "OTEL_METRICS_EXPORTER", None, doc="Standard: otlp also sends the /metrics registry over OTLP."
    )
    otel_logs_exporter: str | None = setting(
        "OTEL_LOGS_EXPORTER", None, doc="Standard: otlp also sends log records over OTLP."
    )
    prometheus_enabled: bool = setting("PLATFORM_PROMETHEUS_ENABLED", True, doc="Serve /metrics.")

    @property
    def is_strict(self) -> bool:
        return self.strict_production or self.environment.lower() in {"prod", "production"}

    def validate(self) -> list[str]:
        problems = []
        if self.consumer_max_attempts < 1:
            problems.append("PLATFORM_RECONCILE_MAX_ATTEMPTS must be at least 1")
        for variable, seconds in (
            ("PLATFORM_POSTGRES_POOL_WAIT_SECONDS", self.postgres_pool_wait_seconds),
            ("PLATFORM_POSTGRES_STATEMENT_TIMEOUT_SECONDS", self.postgres_statement_timeout_seconds),
            ("PLATFORM_POSTGRES_LOCK_TIMEOUT_SECONDS", self.postgres_lock_timeout_seconds),
            (
                "PLATFORM_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
                self.postgres_idle_in_transaction_timeout_seconds,
            ),
            ("PLATFORM_POSTGRES_CONNECT_TIMEOUT_SECONDS", self.postgres_connect_timeout_seconds),
            ("PLATFORM_NATS_PING_INTERVAL_SECONDS", self.nats_ping_interval_seconds),
            ("PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS", self.rpc_handler_timeout_seconds),
            # No backoff would retry without end (and overflow computing max_deliver); a zero
            # lease would cancel every handler at once.
            ("PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS", self.consumer_backoff_seconds),
            ("PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS", self.consumer_max_backoff_seconds),
            ("PLATFORM_RECONCILE_TIMEOUT_SECONDS", self.consumer_ack_wait_seconds),
        ):
            if seconds <= 0:
                problems.append(f"{variable} must be positive")
        for variable, amount in (
            ("PLATFORM_EVENTS_MAX_AGE_DAYS", self.stream_max_age_days),
            ("PLATFORM_RETENTION_INTERVAL_SECONDS", self.retention_interval_seconds),
            ("PLATFORM_RETENTION_OUTBOX_DAYS", self.retention_outbox_days),
            ("PLATFORM_RETENTION_INBOX_DAYS", self.retention_inbox_days),
            ("PLATFORM_RETENTION_DEAD_LETTERS_DAYS", self.retention_dead_letters_days),
            ("PLATFORM_RETENTION_SERVICE_RECORDS_DAYS", self.retention_service_records_days),
        ):
            if amount < 0:
                problems.append(f"{variable} must not be negative")
        problems += self._inbox_retention_problems()
        if self.retention_batch_size < 1:
            problems.append("PLATFORM_RETENTION_BATCH_SIZE must be at least 1")
        if self.postgres_pool_wait_seconds >= self.rpc_handler_timeout_seconds:
            problems.append(
                "PLATFORM_POSTGRES_POOL_WAIT_SECONDS must be below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS"
            )
        if self.postgres_pool_max < 1:
            problems.append("PLATFORM_POSTGRES_POOL_MAX must be at least 1")
        if self.outbox_quarantine_after < 1:
            problems.append("PLATFORM_OUTBOX_QUARANTINE_AFTER must be at least 1")
        if self.consumer_concurrency < 1:
            problems.append("PLATFORM_RECONCILE_WORKERS must be at least 1")
        if self.consumer_retry_for_seconds < 0:
            problems.append("PLATFORM_RECONCILE_RETRY_FOR_SECONDS must not be negative")
        if self.consumer_handler_timeout_seconds is not None and self.consumer_handler_timeout_seconds <= 0:
            problems.append("PLATFORM_RECONCILE_HANDLER_TIMEOUT_SECONDS must be positive")
        if self.is_strict and not self.postgres_dsn:
            problems.append("PLATFORM_POSTGRES_DSN is required in strict production mode")
        return problems

    def _inbox_retention_problems(self) -> list[str]:
        """An inbox id must outlive its event in the stream, or a replay applies it twice."""
        pruning = self.retention_interval_seconds > 0
        if self.stream_max_age_days == 0:
            # NATS keeps events for ever at max age 0: so must the inbox keep their ids.
            if pruning:
                return [
                    "PLATFORM_EVENTS_MAX_AGE_DAYS=0 keeps events for ever, so inbox ids must be kept "
                    "for ever too: set PLATFORM_RETENTION_INTERVAL_SECONDS=0 (no pruning) or a "
                    "positive PLATFORM_EVENTS_MAX_AGE_DAYS"
                ]
            return []
        if self.retention_inbox_days <= self.stream_max_age_days:
            return [
                "PLATFORM_RETENTION_INBOX_DAYS must exceed PLATFORM_EVENTS_MAX_AGE_DAYS "
                "(a replayed event must still find its inbox id)"
            ]
        return []

    def require_dsn(self) -> str:
        if not self.postgres_dsn:
            raise SettingsError(["PLATFORM_POSTGRES_DSN is required"])
        return self.postgres_dsn


# -- the attestation key: the approval service signs with it, git-publisher verifies with it -------
# Both services must accept and refuse the same configurations, and services never import
# each other, so the rule lives in the kit.

MIN_STRICT_ATTESTATION_KEY_BYTES = 32


def attestation_key(
    attestation_secret: str | None, approval_secret: str | None, *, strict: bool
) -> str | None:
    """The key attestations are signed and verified with.

    ``PLATFORM_ATTESTATION_HMAC_SECRET``; outside strict mode, when it is unset, the approval
    secret, so a development setup needs one secret only (at the price that approvers, who
    hold the approval secret, could forge attestations there). Strict mode never falls back.
    """
    if attestation_secret:
        return attestation_secret
    return None if strict else approval_secret


def strict_attestation_key_problems(attestation_secret: str | None, approval_secret: str | None) -> list[str]:
    """Why strict production refuses the attestation key: missing, short, or the approval secret
    again (every approver's CLI holds that one, so they could forge attestations with it)."""
    if not attestation_secret:
        return [
            "PLATFORM_ATTESTATION_HMAC_SECRET is required in strict production mode "
            "(a server-side key, distinct from PLATFORM_APPROVAL_HMAC_SECRET)"
        ]
    if len(attestation_secret.encode()) < MIN_STRICT_ATTESTATION_KEY_BYTES:
        return [
            f"PLATFORM_ATTESTATION_HMAC_SECRET must be at least {MIN_STRICT_ATTESTATION_KEY_BYTES} bytes "
            "in strict production mode"
        ]
    if attestation_secret == approval_secret:
        return [
            "PLATFORM_ATTESTATION_HMAC_SECRET must differ from PLATFORM_APPROVAL_HMAC_SECRET in strict "
            "production mode (approvers hold the approval secret and could forge attestations with it)"
        ]
    return []


def split_address(address: str, variable: str) -> tuple[str, int]:
    """Parse ``host:port`` (or ``:port``) for listeners; errors name ``variable``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SettingsError([f"{variable}: expected host:port, got {address!r}"])
    return (host or "0.0.0.0"), int(port)  # noqa: S104 - an empty host means all interfaces


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``overrides``, for launching child processes."""
    return {**os.environ, **overrides}
