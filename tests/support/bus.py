"""Test helpers to put events on a test's stream and read back what services published."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError
from psycopg import sql

from contracts.envelope import Envelope, cloudevents_headers, decode_envelope, encode_envelope, new_event
from contracts.events import EVENT_TYPE_OF, EventData


async def publish_event(
    js: JetStreamContext,
    events_prefix: str,
    subject: str,
    data: EventData,
    *,
    source: str = "test",
    msg_id: str | None = None,
    envelope: Envelope | None = None,
) -> Envelope:
    """Publish ``data`` (or a prepared ``envelope``) as a real event; ``msg_id`` overrides dedup."""
    if envelope is None:
        envelope = new_event(EVENT_TYPE_OF[type(data)], source, subject, data)
    headers = cloudevents_headers(envelope)
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    await js.publish(f"{events_prefix}.{envelope.type}", encode_envelope(envelope), headers=headers)
    return envelope


async def stream_events(
    js: JetStreamContext, stream: str, events_prefix: str, event_type: str = ">"
) -> list[Envelope]:
    """Every event currently in ``stream`` matching ``event_type`` (a subject suffix or wildcard)."""
    return [envelope for envelope, _ in await stream_messages(js, stream, events_prefix, event_type)]


async def stream_messages(
    js: JetStreamContext, stream: str, events_prefix: str, event_type: str = ">", *, patience: float = 30.0
) -> list[tuple[Envelope, dict[str, str]]]:
    """Like :func:`stream_events`, with each message's headers.

    A clustered stream just after a node came back may answer 503 while its consumers find
    their leader: the read starts over (a fresh consumer, from the first message) for up to
    ``patience`` seconds.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            return await _read_stream(js, stream, events_prefix, event_type)
        except ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _read_stream(
    js: JetStreamContext, stream: str, events_prefix: str, event_type: str
) -> list[tuple[Envelope, dict[str, str]]]:
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    subscription = await js.pull_subscribe(
        f"{events_prefix}.{event_type}",
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, inactive_threshold=30),
    )
    envelopes: list[tuple[Envelope, dict[str, str]]] = []
    try:
        while True:
            try:
                messages = await subscription.fetch(256, timeout=0.5)
            except TimeoutError:
                break
            for message in messages:
                envelopes.append((decode_envelope(message.data), dict(message.headers or {})))
                await message.ack()
            pending = (await subscription.consumer_info()).num_pending
            if not pending:
                break
    finally:
        await subscription.unsubscribe()
    return envelopes


async def wait_until(
    predicate: Callable[[], Awaitable[Any]],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(interval)


async def consumer_settled(js: JetStreamContext, stream: str, durable: str, past_seq: int = 1) -> bool:
    """Whether ``durable`` was handed every message up to stream sequence ``past_seq`` and holds
    none pending or unacknowledged: the server has nothing more to deliver to it, so whatever its
    handlers were going to do about those messages is done. This proves a negative ("the
    redelivery changed nothing") from state instead of a sleep that merely hopes it was long enough.
    """
    info = await js.consumer_info(stream, durable)
    delivered = (info.delivered.stream_seq if info.delivered else None) or 0
    return bool(info.num_pending == 0 and info.num_ack_pending == 0 and delivered >= past_seq)


async def last_seq(js: JetStreamContext, stream: str, events_prefix: str, event_type: str) -> int:
    """The stream sequence of the latest ``event_type`` event (to wait for a consumer past it)."""
    return int((await js.get_last_msg(stream, f"{events_prefix}.{event_type}")).seq or 0)


async def outbox_drained(dsn: str, schema: str) -> bool:
    """Whether ``schema``'s outbox holds no event still to publish: everything the service staged
    is on the stream, so counting events there is final."""
    query = sql.SQL("SELECT count(*) FROM {}.outbox WHERE published_at IS NULL").format(
        sql.Identifier(schema)
    )
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute(query)).fetchone()
    return row is not None and row[0] == 0
