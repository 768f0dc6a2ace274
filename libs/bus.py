"""NATS connection and JetStream provisioning from settings.

The stream name and subject prefix are settings so tests and tenants isolate themselves
on a shared server. Provisioning is idempotent: every process ensures the stream at start,
updating retention and dedup settings when an operator changed them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from libs.settings import PlatformSettings

log = logging.getLogger(__name__)

_DAY = 24 * 3600


@dataclass(frozen=True)
class Subjects:
    """Subject naming for events and RPC endpoints."""

    events_prefix: str
    rpc_prefix: str

    def event(self, event_type: str) -> str:
        return f"{self.events_prefix}.{event_type}"

    def event_type(self, subject: str) -> str:
        return subject.removeprefix(self.events_prefix + ".")

    @property
    def all_events(self) -> str:
        return f"{self.events_prefix}.>"

    def rpc(self, service: str, verb: str) -> str:
        return f"{self.rpc_prefix}.{service}.{verb}"

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> Subjects:
        return cls(events_prefix=settings.subject_prefix, rpc_prefix=settings.rpc_prefix)


class NatsUnavailable(ConnectionError):
    """NATS could not be reached at start-up within the connect timeout."""


async def connect_nats(settings: PlatformSettings, name: str, timeout: float = 30.0) -> NatsClient:
    """Connect, giving up after ``timeout`` at start-up; once connected, reconnect forever.

    A NATS restart pauses a running service instead of killing it, while a service that
    cannot reach NATS at all fails its start with a clear error instead of hanging.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats connection problem", extra={"fields": {"error_type": type(exc).__name__}})

    servers = [url.strip() for url in settings.nats_url.split(",") if url.strip()]
    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=5,
                error_cb=on_error,
            ),
            timeout,
        )
    except TimeoutError:
        raise NatsUnavailable(f"NATS not reachable within {timeout:.0f}s (check PLATFORM_NATS_URL)") from None


def stream_config(settings: PlatformSettings) -> StreamConfig:
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


async def ensure_stream(js: JetStreamContext, settings: PlatformSettings) -> None:
    config = stream_config(settings)
    try:
        await js.stream_info(settings.stream_name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream", extra={"fields": {"stream": settings.stream_name}})
        return
    await js.update_stream(config)
