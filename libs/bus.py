"""NATS connection and JetStream provisioning from settings.

The stream name and subject prefix are settings so tests and tenants isolate themselves
on a shared server. Every process creates the stream at start when it is missing, and only
then: its configuration (replicas, retention, dedup window) is applied by ``platformd migrate``
(:func:`apply_stream_config`), so a pod starting with stale values never resets it.

JetStream API calls made at start-up go through :func:`retry_jetstream`: a clustered broker
that is still electing leaders answers with timeouts or 503s for a while, which is no reason
for a service to crash-loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from libs.errors import is_transient
from libs.settings import BusSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

_DAY = 24 * 3600


REPLAY = "replay"


@dataclass(frozen=True)
class Subjects:
    """Subject naming for events and RPC endpoints.

    An event is published on ``<events prefix>.<type>``. A dead letter's redrive goes to the
    one durable that gave up on it, on ``<events prefix>.replay.<durable>.<type>``: only that
    durable's filter takes it, and only that durable's service may publish there, so no
    service can republish another's event to everyone who consumes it.
    """

    events_prefix: str
    rpc_prefix: str

    def event(self, event_type: str) -> str:
        return f"{self.events_prefix}.{event_type}"

    def replay(self, durable: str, event_type: str) -> str:
        return self.event(f"{REPLAY}.{durable}.{event_type}")

    def replays(self, durable: str) -> str:
        """Every redrive addressed to ``durable``."""
        return self.event(f"{REPLAY}.{durable}.>")

    def event_type(self, subject: str) -> str:
        relative = subject.removeprefix(self.events_prefix + ".")
        if self.replayed_for(subject) is not None:
            return relative.split(".", 2)[2]
        return relative

    def replayed_for(self, subject: str) -> str | None:
        """The durable a redrive on ``subject`` is for; None for an event's own subject."""
        tokens = subject.removeprefix(self.events_prefix + ".").split(".")
        if len(tokens) > 2 and tokens[0] == REPLAY and subject.startswith(self.events_prefix + "."):
            return tokens[1]
        return None

    @property
    def all_events(self) -> str:
        return f"{self.events_prefix}.>"

    def rpc(self, service: str, verb: str) -> str:
        return f"{self.rpc_prefix}.{service}.{verb}"

    @classmethod
    def from_settings(cls, settings: BusSettings) -> Subjects:
        return cls(events_prefix=settings.subject_prefix, rpc_prefix=settings.rpc_prefix)


NATS_MAX_OUTSTANDING_PINGS = 2


class NatsUnavailable(ConnectionError):
    """NATS could not be reached at start-up within the connect timeout."""


async def connect_nats(settings: BusSettings, name: str, timeout: float = 30.0) -> NatsClient:
    """Connect, giving up after ``timeout`` at start-up; once connected, reconnect forever.

    A NATS restart pauses a running service instead of killing it, while a service that
    cannot reach NATS at all fails its start with a clear error instead of hanging.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats connection problem", extra={"fields": {"error_type": type(exc).__name__}})

    servers = [url.strip() for url in settings.nats_url.reveal().split(",") if url.strip()]
    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name=name,
                **identity_options(settings),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=5,
                # A connection whose server stopped answering (half-open path, frozen server)
                # is noticed after ping_interval x (max_outstanding_pings + 1) seconds, then
                # reconnected, instead of after the client's default of minutes.
                ping_interval=settings.nats_ping_interval_seconds,
                max_outstanding_pings=NATS_MAX_OUTSTANDING_PINGS,
                error_cb=on_error,
            ),
            timeout,
        )
    except TimeoutError:
        raise NatsUnavailable(f"NATS not reachable within {timeout:.0f}s (check PLATFORM_NATS_URL)") from None


def identity_options(settings: BusSettings) -> dict[str, Any]:
    """How this process proves who it is to NATS (docs/security.md): its NKEY seed, the inbox
    prefix its identity may subscribe to, and TLS. Nothing set: an anonymous plain connection."""
    options: dict[str, Any] = {"inbox_prefix": settings.nats_inbox_prefix}
    if settings.nats_nkey_seed:
        options["nkeys_seed_str"] = settings.nats_nkey_seed.reveal()
    if settings.nats_tls_ca_file or settings.nats_tls_cert_file:
        options["tls"] = tls_context(settings)
    return options


def tls_context(settings: BusSettings) -> ssl.SSLContext:
    """Verifies the server against ``PLATFORM_NATS_TLS_CA_FILE`` (else the system's CAs) and
    presents the client certificate when one is set (mutual TLS). A certificate is never
    dropped silently: without its key file (which the settings refuse) the key must be in
    the certificate's file, or this raises."""
    ca_file = str(settings.nats_tls_ca_file) if settings.nats_tls_ca_file else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if settings.nats_tls_cert_file:
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
    return context


def stream_config(settings: BusSettings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream_name,
        subjects=[f"{settings.subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.stream_max_age_days * _DAY,
        num_replicas=settings.stream_replicas,
        duplicate_window=settings.stream_duplicate_window_seconds,
        description="platform-control-plane domain events",
    )


def _broker_not_ready(exc: BaseException) -> bool:
    """A JetStream answer that means "ask again shortly": timeouts, no responders, 503s."""
    if isinstance(exc, APIError) and not isinstance(exc, NotFoundError):
        return exc.code in (None, 503) or is_transient(exc)
    return is_transient(exc)


async def retry_jetstream(call: Callable[[], Awaitable[T]], what: str, timeout: float) -> T:
    """``call()``, retried with backoff for up to ``timeout`` seconds while the broker is not ready.

    Any other error (a refused configuration, not found) is raised at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.25
    while True:
        try:
            return await call()
        except Exception as exc:
            if not _broker_not_ready(exc) or loop.time() + delay > deadline:
                raise
            log.warning(
                "JetStream not ready; retrying",
                extra={"fields": {"call": what, "error_type": type(exc).__name__, "retry_in_s": delay}},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def ensure_stream(js: JetStreamContext, settings: BusSettings) -> bool:
    """Create the stream when it is missing; True when it was created. An existing stream is left
    as it is: its configuration is ``platformd migrate``'s job (:func:`apply_stream_config`)."""
    timeout = settings.jetstream_startup_timeout_seconds
    try:
        await retry_jetstream(lambda: js.stream_info(settings.stream_name), "stream_info", timeout)
    except NotFoundError:
        await retry_jetstream(lambda: js.add_stream(stream_config(settings)), "add_stream", timeout)
        log.warning("created stream", extra={"fields": {"stream": settings.stream_name}})
        return True
    return False


async def apply_stream_config(js: JetStreamContext, settings: BusSettings) -> None:
    """Create the stream or bring its configuration in line with the settings (``platformd migrate``)."""
    if await ensure_stream(js, settings):
        return
    await retry_jetstream(
        lambda: js.update_stream(stream_config(settings)),
        "update_stream",
        settings.jetstream_startup_timeout_seconds,
    )
    log.info("stream configuration applied", extra={"fields": {"stream": settings.stream_name}})


async def configure_stream(settings: BusSettings) -> None:
    """Connect and :func:`apply_stream_config` once (``platformd migrate``)."""
    nc = await connect_nats(settings, "platform-migrate")
    try:
        await apply_stream_config(nc.jetstream(), settings)
    finally:
        await nc.close()


def durable_name(service: str, name: str) -> str:
    """The durable consumer ``name`` of ``service`` registers on the stream: ``<service>-<name>``."""
    return f"{service.replace('_', '-')}-{name}"


class StreamBacklog:
    """Whether the platform's durable consumers are behind events older than a deadline.

    Intake's anti-entropy re-requests work that stopped moving; work merely queued behind a
    backlog must not be requested again (that would double the backlog under load). The
    stream's last sequence is sampled on every call, so the sequence the stream had
    ``deadline`` seconds ago is known (after a restart only once ``deadline`` has passed:
    until then nothing counts as stuck).

    Only ``durables`` count, by their exact names (the caller's: a library cannot read the
    services' declarations; :data:`contracts.catalog.DURABLES` names the platform's). Anything
    else on the stream (an operator's debugging tap, a downstream tool's durable, whatever its
    name, the durable of a consumer an upgrade renamed) is consumed by nobody the platform
    waits for, and counting it would postpone anti-entropy for as long as it exists.
    """

    def __init__(self, js: JetStreamContext, stream: str, durables: Iterable[str]) -> None:
        self.js = js
        self.stream = stream
        self.durables = frozenset(durables)
        self._samples: list[tuple[float, int]] = []

    async def behind(self, deadline_seconds: float) -> list[str]:
        """The platform's consumers with undelivered events published more than ``deadline_seconds`` ago.

        Everything but an empty list (or an unknown horizon, reported as ``["(unknown)"]``)
        means: postpone re-requesting.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        info = await self.js.stream_info(self.stream)
        self._samples.append((now, info.state.last_seq))
        horizon = None
        for taken, last_seq in self._samples:
            if taken <= now - deadline_seconds:
                horizon = last_seq
        # Keep the newest sample older than the deadline, and everything after it.
        older = [sample for sample in self._samples if sample[0] <= now - deadline_seconds]
        self._samples = older[-1:] + [
            sample for sample in self._samples if sample[0] > now - deadline_seconds
        ]
        if horizon is None:
            return ["(unknown)"]
        consumers = await self.js.consumers_info(self.stream)
        return [
            consumer.name
            for consumer in consumers
            if consumer.config.durable_name in self.durables
            and (consumer.num_pending or 0) > 0
            and _delivered_through(consumer) < horizon
        ]


def _delivered_through(consumer: ConsumerInfo) -> int:
    return (consumer.delivered.stream_seq or 0) if consumer.delivered is not None else 0
