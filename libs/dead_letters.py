"""Dead letters for operators: list them and replay them, the same way in every service.

A consumer dead-letters an event after its last attempt (or at once when it cannot decode
it) by recording it in its schema's ``dead_letters`` table (:mod:`libs.inbox`). Every
service serves two RPC verbs over them, registered by the kit:

- ``<service>.list_dead_letters``: newest first, without payloads (they may be large and
  hold request data; the event id and type identify the event in the stream);
- ``<service>.replay_dead_letter``: in one transaction, delete the consumer's inbox row for
  the event, stage the stored payload in the outbox under a *new* ``Nats-Msg-Id`` and mark
  the dead letter replayed. The relay then publishes it like any event, so a crash between
  steps loses nothing: either all three happened or none.

The payload is republished unchanged (same envelope id) to the consumer that gave up
alone, on ``<events prefix>.replay.<durable>.<type>`` (:meth:`libs.bus.Subjects.replay`):
only that durable's filter takes it, and its inbox row was just deleted, so it handles the
event afresh. Other consumers of the type never see the copy, and a service's identity may
publish only on its own durables' replay subjects, never on the events it consumes. A new
``Nats-Msg-Id`` is needed because the stream's duplicate window would otherwise drop the
republished copy.

The outbox relay lists here too: a row JetStream refuses for good is quarantined
(:class:`libs.outbox.OutboxRelay`) and recorded as a dead letter of kind ``outbox`` under
consumer ``outbox``, without a payload (the event stays in its outbox row). Replaying it,
once the cause is fixed (the stream takes the subject, the server's ``max_payload`` was
raised), hands the row back to the relay with its original event id.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from psycopg import AsyncConnection

from contracts.models import DeadLetterView
from contracts.replies import DeadLetterList
from contracts.rpc import ListDeadLetters, ReplayDeadLetter
from libs.bus import Subjects
from libs.database import Pool
from libs.errors import Conflict, NotFound, ValidationFailed
from libs.telemetry import OUTBOX_QUARANTINED_ROWS

MAX_LIMIT = 500


def _view(row: dict[str, Any]) -> DeadLetterView:
    return DeadLetterView(
        id=row["id"],
        consumer=row["consumer"],
        event_id=str(row["event_id"]) if row["event_id"] is not None else None,
        event_type=row["event_type"],
        subject=row["subject"],
        stream_seq=row["stream_seq"],
        error=row["error"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        replayed_at=row["replayed_at"],
        kind=row["kind"],
    )


_COLUMNS = (
    "id, consumer, event_id, event_type, subject, stream_seq, error, attempts, created_at, replayed_at, kind"
)


class DeadLetters:
    """The two operator verbs over one service's ``dead_letters`` table."""

    def __init__(self, pool: Pool, outbox_channel: str, subjects: Subjects) -> None:
        self.pool = pool
        self.outbox_channel = outbox_channel
        self.subjects = subjects

    async def list(self, query: ListDeadLetters) -> DeadLetterList:
        if not 1 <= query.limit <= MAX_LIMIT:
            raise ValidationFailed(
                f"limit must be between 1 and {MAX_LIMIT}",
                details=[{"field": "limit", "message": f"must be between 1 and {MAX_LIMIT}"}],
            )
        where = "" if query.include_replayed else "WHERE replayed_at IS NULL"
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id DESC LIMIT %s",  # noqa: S608 - constants
                [query.limit],
            )
            rows = await cursor.fetchall()
        return DeadLetterList(items=[_view(row) for row in rows])

    async def replay(self, command: ReplayDeadLetter) -> DeadLetterView:
        """Re-deliver dead letter ``command.id``; 404 when unknown, 409 when already replayed."""
        async with self.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                f"SELECT {_COLUMNS}, payload, headers, outbox_seq FROM dead_letters WHERE id = %s FOR UPDATE",  # noqa: S608
                [command.id],
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"dead letter {command.id} not found")
            if row["replayed_at"] is not None:
                raise Conflict(
                    f"dead letter {command.id} was already replayed at {row['replayed_at'].isoformat()}"
                )
            if row["kind"] == "outbox":
                # The relay quarantined the row: the event is still in the outbox, never published.
                await _release_outbox_row(conn, command.id, row["outbox_seq"])
                # The gauge falls with the release, not at the relay's next restart, so the
                # quarantine alert clears once the operator has dealt with every row.
                OUTBOX_QUARANTINED_ROWS.set(await _quarantined_rows(conn))
            else:
                await _stage_copy(conn, row, command, self.subjects)
            cursor = await conn.execute(
                f"UPDATE dead_letters SET replayed_at = now() WHERE id = %s RETURNING {_COLUMNS}",  # noqa: S608
                [command.id],
            )
            updated = await cursor.fetchone()
            await conn.execute("SELECT pg_notify(%s, '')", [self.outbox_channel])
        assert updated is not None
        return _view(updated)


async def _release_outbox_row(conn: AsyncConnection[Any], letter_id: int, seq: int | None) -> None:
    """Give a quarantined outbox row back to the relay, with a fresh count of refusals.

    The row keeps its event id (it was never published, so its ``Nats-Msg-Id`` is unused)
    and its place in its request's order.
    """
    cursor = await conn.execute(
        "UPDATE outbox SET quarantined_at = NULL, rejections = 0"
        " WHERE seq = %s AND quarantined_at IS NOT NULL AND published_at IS NULL RETURNING seq",
        [seq],
    )
    if await cursor.fetchone() is None:
        raise Conflict(f"dead letter {letter_id}: its outbox row is no longer quarantined")


async def _quarantined_rows(conn: AsyncConnection[Any]) -> int:
    cursor = await conn.execute("SELECT count(*) AS n FROM outbox WHERE quarantined_at IS NOT NULL")
    row = await cursor.fetchone()
    return int(row["n"]) if row else 0


async def _stage_copy(
    conn: AsyncConnection[Any], row: dict[str, Any], command: ReplayDeadLetter, subjects: Subjects
) -> None:
    """Make the consumer handle the dead letter's event again: forget it in the consumer's
    inbox and stage the stored payload in the outbox, addressed to that consumer alone,
    under a fresh ``Nats-Msg-Id``."""
    if row["event_id"] is not None:
        # Without this the consumer would take the replay for a duplicate and skip it.
        await conn.execute(
            "DELETE FROM inbox WHERE consumer = %s AND event_id = %s", [row["consumer"], row["event_id"]]
        )
    headers = {k: v for k, v in dict(row["headers"] or {}).items() if k.lower() != "nats-msg-id"}
    headers["platform-replay-of"] = str(row["id"])
    headers["platform-replayed-by"] = command.replayed_by
    # The outbox row's event_id is what the relay sends as Nats-Msg-Id: fresh, so the
    # stream's duplicate window does not swallow the copy. The payload keeps its id. No
    # ordering key: a replay comes after its request's newer events whatever the relay does.
    # The type of an undecodable letter is its subject's (a redrive's subject names it too).
    event_type = row["event_type"] or subjects.event_type(row["subject"])
    await conn.execute(
        "INSERT INTO outbox (event_id, event_type, subject, payload, headers) VALUES (%s, %s, %s, %s, %s)",
        [
            uuid.uuid4(),
            event_type,
            subjects.replay(row["consumer"], event_type),
            bytes(row["payload"]),
            json.dumps(headers),
        ],
    )
