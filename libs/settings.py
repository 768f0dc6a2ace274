"""Typed, read-once settings from ``PLATFORM_*`` environment variables.

Every process builds exactly one settings object at start-up with :func:`load_settings`.
Settings come in groups by concern (:class:`BusSettings`, :class:`DatabaseSettings`,
:class:`ConsumerSettings`, :class:`TelemetrySettings`, :class:`SecuritySettings`, ...); a
service's settings class inherits the groups it needs and adds its own fields.

A field is declared with :func:`setting`, which names its environment variable and
documents it. Its type says the rest:

- ``Annotated[int, Bounds(ge=1)]``: the allowed range, checked at load time;
- :class:`Secret` (or :class:`SecretUrl` for a URL or DSN that may carry credentials): the
  value never prints (repr, str, format and JSON show it masked; ``reveal()`` gives it to
  the one call that needs it), and ``<NAME>_FILE`` may name a file holding it (its content,
  stripped of the trailing newline); an unreadable file is a start-up error, never a
  silent fallback.

A value that does not parse or is out of range is a start-up error naming the variable;
rules between settings live in the group's ``validate``. All problems are collected and
reported together so an operator fixes them in one round.

No other module reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from contracts.envelope import DEFAULT_SCHEMA_BASE_URL, WIRE_FORMS

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
MASK = "**********"


class SettingsError(Exception):
    """Start-up configuration is invalid; the message names every offending variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


# -- declaring a setting: its variable, its range, whether it is a secret --------------------------


class Secret:
    """A value that never prints: repr, str, format (and so logs, ``platformd config`` and
    JSON written with ``default=str``) show it masked; other JSON encoders refuse it.
    Code that needs the value asks for it with :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one call that needs it (a signature, a connection)."""
        return self._value

    def masked(self) -> str:
        return MASK if self._value else ""

    def __str__(self) -> str:
        return self.masked()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.masked()!r})"

    def __format__(self, spec: str) -> str:
        return format(self.masked(), spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretUrl(Secret):
    """A URL, or a libpq ``key=value`` DSN, that may carry credentials. Shown with its user
    info, query and fragment masked (``postgresql://**********@db:5432/platform``), or a
    DSN's password (``host=db password=**********``); a comma-separated list (NATS servers)
    part by part. Bare URLs show as they are."""

    def masked(self) -> str:
        return ",".join(_masked_url(part.strip()) for part in self._value.split(","))


_DSN_PASSWORD = re.compile(r"(\b\w*password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _masked_url(text: str) -> str:
    scheme, separator, rest = text.partition("://")
    if separator and "@" in rest:
        # A password may hold "/", "?" or "#" unescaped, which a URL parser reads as the
        # path, query or fragment: everything before the last "@" is user info to hide.
        shown = _masked_url(f"{scheme}://{rest.rpartition('@')[2]}")
        return shown.replace("://", f"://{MASK}@", 1)
    try:
        url = urlsplit(text)
    except ValueError:  # not a URL at all (an unbalanced "["): nothing of it is shown
        return MASK
    if not (url.scheme and url.netloc):
        return _DSN_PASSWORD.sub(rf"\g<1>{MASK}", text)
    return urlunsplit(
        (url.scheme, url.netloc, url.path, MASK if url.query else "", MASK if url.fragment else "")
    )


def reveal(secret: Secret | None) -> str | None:
    """The value of a secret that may be unset, for the call that needs it."""
    return None if secret is None else secret.reveal()


@dataclass(frozen=True)
class Bounds:
    """The range a number setting must lie in: inclusive ``ge``/``le``, exclusive ``gt``/``lt``.

    Declared beside the setting (``Annotated[int, Bounds(ge=1)]``) and checked by
    :func:`load_settings`, which names the variable and the range when a value is outside it.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def allows(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def describe(self) -> str:
        """The range in words: ``must be positive``, ``must be between 0 and 65535``."""
        lower = self.ge if self.ge is not None else self.gt
        upper = self.le if self.le is not None else self.lt
        if upper is None and lower == 0:
            return "must be positive" if self.gt is not None else "must not be negative"
        if self.ge is not None and self.le is not None:
            return f"must be between {self.ge} and {self.le}"
        parts = [
            f"{phrase} {limit}"
            for phrase, limit in (
                ("at least", self.ge),
                ("above", self.gt),
                ("at most", self.le),
                ("below", self.lt),
            )
            if limit is not None
        ]
        return "must be " + " and ".join(parts)


def setting(env: str, default: Any = MISSING, *, doc: str) -> Any:
    """Declare a settings field bound to environment variable ``env``."""
    metadata = {"env": env, "doc": doc}
    if isinstance(default, list):
        items = tuple(default)
        return field(default_factory=lambda: list(items), metadata=metadata)
    if isinstance(default, dict):
        pairs = tuple(default.items())
        return field(default_factory=lambda: dict(pairs), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class _Declared:
    """What a field's annotation says: the type, whether it may be None, its bounds."""

    kind: Any
    optional: bool = False
    bounds: Bounds | None = None

    @property
    def secret(self) -> bool:
        return isinstance(self.kind, type) and issubclass(self.kind, Secret)

    @property
    def collection(self) -> bool:
        return typing.get_origin(self.kind) in (list, dict)


def _declared(annotation: Any) -> _Declared:
    if typing.get_origin(annotation) is Annotated:
        inner, *extras = typing.get_args(annotation)
        bounds = next((extra for extra in extras if isinstance(extra, Bounds)), None)
        return dataclasses.replace(_declared(inner), bounds=bounds)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        [inner] = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return dataclasses.replace(_declared(inner), optional=True)
    return _Declared(annotation)


def _settings_of(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], _Declared]]:
    """The class's settings fields, its own first, then each group's in the order the class
    lists its groups (the order ``platformd config`` shows and problems are reported in)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    classes = cls.__mro__

    def declared_by(spec: dataclasses.Field[Any]) -> int:
        return next(
            i for i, klass in enumerate(classes) if spec.name in vars(klass).get("__annotations__", {})
        )

    specs = [spec for spec in dataclasses.fields(cls) if "env" in spec.metadata]
    return [(spec, _declared(hints[spec.name])) for spec in sorted(specs, key=declared_by)]


def secret_variables(cls: type[Any]) -> set[str]:
    """The variables of ``cls`` that hold secrets (and so also accept ``<NAME>_FILE``)."""
    return {spec.metadata["env"] for spec, declared in _settings_of(cls) if declared.secret}


# -- reading the environment -------------------------------------------------------------------------


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {raw!r}")


def _parse(raw: str, declared: _Declared) -> Any:
    kind = declared.kind
    if declared.optional and not raw.strip():
        return None
    if declared.secret:
        return kind(raw)
    if kind is bool:
        return parse_bool(raw)
    if kind is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if kind is float:
        try:
            number = float(raw.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(number):  # nan passes every bound; inf is no limit anyone means
            raise ValueError(f"expected a finite number, got {raw!r}")
        return number
    if kind is Path:
        return Path(raw.strip()).expanduser()
    if typing.get_origin(kind) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if typing.get_origin(kind) is dict:
        return _parse_pairs(raw)
    return raw


def _parse_pairs(raw: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _raw_value(env: Mapping[str, str], variable: str, *, secret: bool) -> str | None:
    """The variable's text; for a secret, also the content of the file ``<variable>_FILE`` names."""
    file_variable = f"{variable}_FILE"
    if not (secret and env.get(file_variable)):
        return env.get(variable)
    if variable in env:
        raise SettingsError([f"{variable} and {file_variable} are both set; set only one"])
    try:
        with open(env[file_variable], encoding="utf-8") as handle:
            return handle.read().rstrip("\n")
    except OSError as exc:
        raise SettingsError(
            [f"{file_variable}: cannot read the file ({exc.strerror or 'unreadable'})"]
        ) from None


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` (a dataclass of :func:`setting` fields) from the environment.

    Raises :class:`SettingsError` listing every variable that is unreadable, does not parse,
    is out of its bounds or breaks a rule of its group (``validate``).
    """
    env = os.environ if environ is None else environ
    declared = _settings_of(cls)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec, kind in declared:
        variable = spec.metadata["env"]
        try:
            raw = _raw_value(env, variable, secret=kind.secret)
            # Empty is how Helm values and compose files leave a variable unset, and an empty
            # list or mapping is never a useful setting (an empty algorithm allow-list would
            # refuse every token): it means the default.
            if raw is not None and not (kind.collection and not raw.strip()):
                values[spec.name] = _parse(raw, kind)
        except SettingsError as exc:
            problems.extend(exc.problems)
        except ValueError as exc:
            problems.append(f"{variable}: {exc}")
    problems.extend(
        f"{spec.metadata['env']} is required"
        for spec, _ in declared
        if spec.name not in values and spec.default is MISSING and spec.default_factory is MISSING
    )
    if problems:
        raise SettingsError(problems)
    instance = cls(**values)
    problems = _out_of_bounds(instance, declared)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        problems.extend(validate())
    if problems:
        raise SettingsError(problems)
    return instance


def _out_of_bounds(instance: Any, declared: list[tuple[dataclasses.Field[Any], _Declared]]) -> list[str]:
    problems = []
    for spec, kind in declared:
        value = getattr(instance, spec.name)
        if kind.bounds is not None and value is not None and not kind.bounds.allows(value):
            problems.append(f"{spec.metadata['env']} {kind.bounds.describe()} (got {value})")
    return problems


def describe_settings(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every field: used by ``platformd config`` and the docs.
    A secret's default shows masked, like its value would."""
    return [
        (spec.metadata["env"], _shown_default(spec), spec.metadata["doc"]) for spec, _ in _settings_of(cls)
    ]


def _shown_default(spec: dataclasses.Field[Any]) -> str:
    if spec.default_factory is not MISSING:
        value = spec.default_factory()
        items = [f"{key}={item}" for key, item in value.items()] if isinstance(value, dict) else value
        return ",".join(map(str, items))
    if spec.default is MISSING:
        return "(required)"
    return "" if spec.default is None else str(spec.default)


# -- the groups services compose -------------------------------------------------------------------


class SettingsGroup:
    """Root of the groups: each group's ``validate`` adds its own rules to those of the
    groups after it in the composing class's MRO (``super().validate()``)."""

    def validate(self) -> list[str]:
        return []


@dataclass(frozen=True)
class ProcessSettings(SettingsGroup):
    """How every process stops, the gateway included."""

    shutdown_timeout_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_SHUTDOWN_TIMEOUT_SECONDS", 20.0, doc="Drain time for in-flight work on SIGTERM."
    )


MIN_STRICT_SECRET_BYTES = 32


@dataclass(frozen=True)
class SecuritySettings(SettingsGroup):
    """Strict production mode, which refuses weak or missing security settings; the groups
    holding secrets (attestation keys, the gateway's tokens) build on it."""

    environment: str = setting(
        "PLATFORM_ENV", "dev", doc="Deployment environment; `prod` implies strict mode."
    )
    strict_production: bool = setting(
        "PLATFORM_STRICT_PRODUCTION", False, doc="Refuse to start with weak or missing security settings."
    )

    @property
    def is_strict(self) -> bool:
        return self.strict_production or self.environment.lower() in {"prod", "production"}

    @staticmethod
    def short_secret_problems(variable: str, secret: Secret | None) -> list[str]:
        """Strict mode's floor for a shared secret: a short one can be guessed offline."""
        if secret is None or len(secret.reveal().encode()) >= MIN_STRICT_SECRET_BYTES:
            return []
        return [f"{variable} must be at least {MIN_STRICT_SECRET_BYTES} bytes in strict production mode"]


@dataclass(frozen=True)
class TelemetrySettings(SettingsGroup):
    """Logs, traces and metrics."""

    service_name: str = setting("PLATFORM_SERVICE_NAME", "platform", doc="Name used in logs and metrics.")
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
    otel_exporter_otlp_protocol: str | None = setting(
        "OTEL_EXPORTER_OTLP_PROTOCOL", None, doc="Standard: only http/protobuf (OTLP/HTTP) is supported."
    )
    otel_exporter_otlp_traces_protocol: str | None = setting(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", None, doc="Standard: only http/protobuf is supported."
    )
    otel_exporter_otlp_metrics_protocol: str | None = setting(
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", None, doc="Standard: only http/protobuf is supported."
    )
    otel_exporter_otlp_logs_protocol: str | None = setting(
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", None, doc="Standard: only http/protobuf is supported."
    )
    prometheus_enabled: bool = setting("PLATFORM_PROMETHEUS_ENABLED", True, doc="Serve /metrics.")

    def validate(self) -> list[str]:
        from libs import otlp_export  # the exporters know what they support

        values = {spec.metadata.get("env"): getattr(self, spec.name) for spec in dataclasses.fields(self)}
        problems = super().validate()
        for variable, supported in otlp_export.SUPPORTED.items():
            problems += otlp_export.unsupported(variable, values[variable], supported)
        return problems


@dataclass(frozen=True)
class BusSettings(SettingsGroup):
    """The NATS connection, the event stream and the subjects of events and RPC calls."""

    nats_url: SecretUrl = setting(
        "PLATFORM_NATS_URL", SecretUrl("nats://127.0.0.1:4222"), doc="NATS server URL(s), comma separated."
    )
    nats_nkey_seed: Secret | None = setting(
        "PLATFORM_NATS_NKEY_SEED",
        None,
        doc="NKEY seed of this process's NATS identity (docs/security.md); usually "
        "PLATFORM_NATS_NKEY_SEED_FILE, a file holding it. Unset: connect without one.",
    )
    nats_inbox_prefix: str = setting(
        "PLATFORM_NATS_INBOX_PREFIX",
        "_INBOX",
        doc="Subject prefix of this process's replies; with identities, the one its identity may "
        "subscribe to (`platformd nats-config` lists them, e.g. _INBOX_intake).",
    )
    nats_tls_ca_file: Path | None = setting(
        "PLATFORM_NATS_TLS_CA_FILE", None, doc="CA bundle the NATS server's certificate is verified with."
    )
    nats_tls_cert_file: Path | None = setting(
        "PLATFORM_NATS_TLS_CERT_FILE", None, doc="Client certificate for NATS (mutual TLS)."
    )
    nats_tls_key_file: Path | None = setting(
        "PLATFORM_NATS_TLS_KEY_FILE", None, doc="Private key of PLATFORM_NATS_TLS_CERT_FILE."
    )
    nats_ping_interval_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_NATS_PING_INTERVAL_SECONDS",
        5.0,
        doc="Client pings to the NATS server; three unanswered intervals mark the connection "
        "dead and start a reconnect.",
    )
    jetstream_startup_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_JETSTREAM_STARTUP_TIMEOUT_SECONDS",
        60.0,
        doc="How long start-up retries JetStream API calls while the broker elects leaders.",
    )
    stream_name: str = setting(
        "PLATFORM_EVENTS_STREAM", "PLATFORM_EVENTS", doc="JetStream stream for events."
    )
    subject_prefix: str = setting(
        "PLATFORM_EVENTS_SUBJECT_PREFIX", "platform.events", doc="Subject prefix of domain events."
    )
    rpc_prefix: str = setting(
        "PLATFORM_RPC_SUBJECT_PREFIX", "platform.rpc", doc="Subject prefix of RPC endpoints."
    )
    events_schema_base_url: str = setting(
        "PLATFORM_EVENTS_SCHEMA_BASE_URL",
        DEFAULT_SCHEMA_BASE_URL,
        doc="Absolute http(s) URL where contracts/schemas/ is published: every event's CloudEvents "
        "dataschema is <this>/data/<type>.v<n>.json.",
    )
    events_wire_form: str = setting(
        "PLATFORM_EVENTS_WIRE_FORM",
        "cloudevents",
        doc="How events are written: cloudevents (CloudEvents 1.0 structured mode), or envelope, the "
        "form releases before CloudEvents read, while one of them may still be running during a "
        "rolling upgrade. Both forms are always read.",
    )
    stream_max_age_days: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_EVENTS_MAX_AGE_DAYS",
        30.0,
        doc="Event retention for replay; 0 keeps events for ever (allowed only with "
        "PLATFORM_RETENTION_INTERVAL_SECONDS=0, as inbox ids must then be kept for ever too).",
    )
    stream_replicas: Annotated[int, Bounds(ge=1, le=5)] = setting(
        "PLATFORM_EVENTS_REPLICAS", 1, doc="Stream replicas (3 in production)."
    )
    stream_duplicate_window_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_EVENTS_DUPLICATE_WINDOW_SECONDS",
        900.0,
        doc="Server-side dedup window; must exceed the relay's worst retry gap.",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if bool(self.nats_tls_cert_file) != bool(self.nats_tls_key_file):
            problems.append("PLATFORM_NATS_TLS_CERT_FILE and PLATFORM_NATS_TLS_KEY_FILE go together")
        if self.events_wire_form not in WIRE_FORMS:
            problems.append(
                f"PLATFORM_EVENTS_WIRE_FORM must be one of {', '.join(WIRE_FORMS)} (got {self.events_wire_form!r})"
            )
        base = urlsplit(self.events_schema_base_url)
        # CloudEvents requires dataschema to be an absolute URI; a query or fragment would end
        # up in the middle of it.
        if base.scheme not in ("http", "https") or not base.netloc or base.query or base.fragment:
            problems.append(
                "PLATFORM_EVENTS_SCHEMA_BASE_URL must be an absolute http(s) URL without query or "
                f"fragment (got {self.events_schema_base_url!r})"
            )
        return problems


@dataclass(frozen=True)
class DatabaseSettings(SettingsGroup):
    """The service's Postgres: where it is, its pool, and the limits of every session."""

    postgres_dsn: SecretUrl | None = setting(
        "PLATFORM_POSTGRES_DSN", None, doc="Postgres connection string (libpq URI or key=value)."
    )
    postgres_pool_max: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_POSTGRES_POOL_MAX",
        10,
        doc="Connections per process; also how many RPC calls a process serves at once (each "
        "holds one connection, more would only queue for the pool).",
    )
    postgres_pool_wait_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_POSTGRES_POOL_WAIT_SECONDS",
        3.0,
        doc="Longest wait for a free pool connection before the call fails as unavailable; "
        "keep it below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS.",
    )
    postgres_statement_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_POSTGRES_STATEMENT_TIMEOUT_SECONDS",
        30.0,
        doc="Server-side limit of one statement; a server that has not answered 2 s after it is "
        "taken for dead and the connection dropped.",
    )
    postgres_lock_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_POSTGRES_LOCK_TIMEOUT_SECONDS", 10.0, doc="Longest wait for a row or table lock."
    )
    postgres_idle_in_transaction_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
        60.0,
        doc="A session idle inside an open transaction this long is ended by the server (its locks released).",
    )
    postgres_connect_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_POSTGRES_CONNECT_TIMEOUT_SECONDS", 10.0, doc="Limit for opening one connection."
    )
    postgres_sslmode: str | None = setting(
        "PLATFORM_POSTGRES_SSLMODE",
        None,
        doc="libpq sslmode (verify-full in production); wins over one in the DSN. Unset: the DSN's, "
        "else libpq's default (prefer).",
    )
    postgres_sslrootcert: Path | None = setting(
        "PLATFORM_POSTGRES_SSLROOTCERT",
        None,
        doc="CA bundle the Postgres server's certificate is verified with (libpq sslrootcert).",
    )
    auto_migrate: bool = setting("PLATFORM_AUTO_MIGRATE", False, doc="Apply pending migrations on start.")

    def require_dsn(self) -> str:
        """The DSN itself, with the TLS settings, for opening connections."""
        from libs.database import with_tls  # the database module builds on these settings

        if not self.postgres_dsn:
            raise SettingsError(["PLATFORM_POSTGRES_DSN is required"])
        return with_tls(self.postgres_dsn.reveal(), self.postgres_sslmode, self.postgres_sslrootcert)


@dataclass(frozen=True)
class ConsumerSettings(SettingsGroup):
    """How event consumers deliver, retry and give up (the ``PLATFORM_RECONCILE_*`` names)."""

    consumer_max_attempts: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_RECONCILE_MAX_ATTEMPTS", 5, doc="Deliveries of one event before it is dead-lettered."
    )
    # No backoff would retry without end (and overflow computing max_deliver); a zero lease
    # would cancel every handler at once.
    consumer_backoff_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS", 1.0, doc="First retry delay; doubles per attempt."
    )
    consumer_max_backoff_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS", 60.0, doc="Upper bound of the retry delay."
    )
    consumer_ack_wait_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_RECONCILE_TIMEOUT_SECONDS", 30.0, doc="Lease of one delivery (kept alive while working)."
    )
    consumer_concurrency: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_RECONCILE_WORKERS", 8, doc="Events handled concurrently per consumer."
    )
    consumer_retry_for_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RECONCILE_RETRY_FOR_SECONDS",
        3600.0,
        doc="How long an event whose handler cannot reach a dependency (network, timeout, 5xx, "
        "database down) keeps being retried, counted in backoff time; other errors are "
        "dead-lettered after PLATFORM_RECONCILE_MAX_ATTEMPTS.",
    )
    consumer_handler_timeout_seconds: Annotated[float | None, Bounds(gt=0)] = setting(
        "PLATFORM_RECONCILE_HANDLER_TIMEOUT_SECONDS",
        None,
        doc="A handler running longer is cancelled (its transaction rolls back, the event is "
        "retried); default 10 x PLATFORM_RECONCILE_TIMEOUT_SECONDS.",
    )
    consumer_start_lookback_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_CONSUMER_START_LOOKBACK_SECONDS",
        300.0,
        doc="A consumer created for the first time starts with the events of this many seconds "
        "back (0: only new ones), never with the whole retained history.",
    )


@dataclass(frozen=True)
class PlatformSettings(
    ProcessSettings, SecuritySettings, TelemetrySettings, BusSettings, DatabaseSettings, ConsumerSettings
):
    """What every backend service composes: the groups the service kit needs, plus the kit's
    own settings (the ops port, serving RPC calls, the outbox relay, retention) and the rules
    between groups."""

    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9100", doc="host:port for /healthz, /readyz and /metrics."
    )
    rpc_handler_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS",
        4.0,
        doc="An RPC call not answered this long after it arrived is cancelled (its transaction "
        "rolls back) and answered unavailable; keep it below the gateway's "
        "PLATFORM_RPC_TIMEOUT_SECONDS (5), so a caller that gave up never sees its command commit later.",
    )
    outbox_poll_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_OUTBOX_POLL_SECONDS", 1.0, doc="Relay polling interval (NOTIFY wakes it sooner)."
    )
    outbox_quarantine_after: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_OUTBOX_QUARANTINE_AFTER",
        5,
        doc="Refusals of one outbox row by JetStream (too large, no stream for its subject, a 4xx "
        "answer) before the relay sets it aside as a dead letter of kind outbox; timeouts and "
        "lost connections never count.",
    )
    retention_interval_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RETENTION_INTERVAL_SECONDS",
        3600.0,
        doc="How often old rows are pruned (published outbox rows, inbox ids, replayed dead "
        "letters, the service's own records); 0 turns pruning off.",
    )
    retention_batch_size: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_RETENTION_BATCH_SIZE", 1000, doc="Rows deleted per transaction while pruning."
    )
    retention_outbox_days: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RETENTION_OUTBOX_DAYS", 7.0, doc="Published outbox rows are kept this long."
    )
    retention_inbox_days: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RETENTION_INBOX_DAYS",
        35.0,
        doc="Ids of handled events are kept this long; must exceed PLATFORM_EVENTS_MAX_AGE_DAYS, "
        "or a replay of an event still in the stream would be applied twice.",
    )
    retention_dead_letters_days: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RETENTION_DEAD_LETTERS_DAYS",
        30.0,
        doc="Replayed dead letters are kept this long; open ones until an operator acts.",
    )
    retention_service_records_days: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RETENTION_SERVICE_RECORDS_DAYS",
        35.0,
        doc="Service records whose use is over: renderer bundles, cluster-bootstrapper's "
        "applied-object records of torn-down or superseded environments.",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        try:
            split_address(self.health_address, "PLATFORM_HEALTH_ADDRESS")
        except SettingsError as exc:
            problems.extend(exc.problems)
        problems += self._inbox_retention_problems()
        if self.postgres_pool_wait_seconds >= self.rpc_handler_timeout_seconds:
            problems.append(
                "PLATFORM_POSTGRES_POOL_WAIT_SECONDS must be below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS"
            )
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


@dataclass(frozen=True)
class AttestationSettings(SecuritySettings):
    """The keys of approvals and attestations: the approval service checks approvers'
    signatures and signs attestations, git-publisher verifies them. Both must accept and
    refuse the same configurations, and services never import each other, so the group
    lives in the kit."""

    approval_hmac_secret: Secret | None = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET",
        None,
        doc="Key of the approval signatures clients send (every approver's CLI holds it); outside "
        "strict mode also the attestation key when PLATFORM_ATTESTATION_HMAC_SECRET is unset.",
    )
    attestation_hmac_secret: Secret | None = setting(
        "PLATFORM_ATTESTATION_HMAC_SECRET",
        None,
        doc="Server-side key of attestations: the approval service signs with it, git-publisher "
        "verifies with it; unset outside strict mode: PLATFORM_APPROVAL_HMAC_SECRET.",
    )

    @property
    def attestation_key(self) -> Secret | None:
        """The key attestations are signed and verified with.

        ``PLATFORM_ATTESTATION_HMAC_SECRET``; outside strict mode, when it is unset, the approval
        secret, so a development setup needs one secret only (at the price that approvers, who
        hold the approval secret, could forge attestations there). Strict mode never falls back.
        """
        if self.attestation_hmac_secret:
            return self.attestation_hmac_secret
        return None if self.is_strict else self.approval_hmac_secret

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.is_strict:
            problems += self._strict_attestation_key_problems()
        return problems

    def _strict_attestation_key_problems(self) -> list[str]:
        """Why strict production refuses the attestation key: missing, short, or the approval
        secret again (every approver's CLI holds that one, so they could forge attestations with it)."""
        if not self.attestation_hmac_secret:
            return [
                "PLATFORM_ATTESTATION_HMAC_SECRET is required in strict production mode "
                "(a server-side key, distinct from PLATFORM_APPROVAL_HMAC_SECRET)"
            ]
        short = self.short_secret_problems("PLATFORM_ATTESTATION_HMAC_SECRET", self.attestation_hmac_secret)
        if short:
            return short
        if self.attestation_hmac_secret == self.approval_hmac_secret:
            return [
                "PLATFORM_ATTESTATION_HMAC_SECRET must differ from PLATFORM_APPROVAL_HMAC_SECRET in strict "
                "production mode (approvers hold the approval secret and could forge attestations with it)"
            ]
        return []


def split_address(address: str, variable: str) -> tuple[str, int]:
    """Parse ``host:port`` (or ``:port``) for listeners; errors name ``variable``."""
    host, sep, port = address.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise SettingsError([f"{variable}: expected host:port, got {address!r}"])
    return (host or "0.0.0.0"), int(port)  # noqa: S104 - an empty host means all interfaces


# What an embedded server (nats-server, postgres, initdb) is given of this process's
# environment: where to find programs and libraries, its locale and temporary directory.
# Nothing else: the launcher's environment holds the platform's secrets and whatever else
# the user exported (cloud keys, tokens), none of which a server needs.
SERVER_VARIABLES = (
    "PATH",
    "LD_LIBRARY_PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_COLLATE",
    "LC_MESSAGES",
    "TZ",
    "TMPDIR",
)


def server_environment() -> dict[str, str]:
    """The environment an embedded server process starts with (:data:`SERVER_VARIABLES`)."""
    return {name: os.environ[name] for name in SERVER_VARIABLES if name in os.environ}


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``overrides``, for launching child processes."""
    return {**os.environ, **overrides}
