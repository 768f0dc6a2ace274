"""Retention: rows whose job is done are deleted on a schedule, a small batch at a time.

The kit prunes its own tables (published outbox rows, inbox ids, replayed dead letters);
a service adds its own rules (:meth:`Retention.add`), e.g. renderer bundles. Every rule
names a table and the condition that makes a row deletable, with ``%(cutoff)s`` standing for
"now minus the rule's retention". Deletes go ``batch_size`` rows per transaction until
nothing is left, so a pass never holds many locks or a long transaction, and a table that
grew during an outage is brought back in one pass.

What must be kept longer than what (defaults in :class:`libs.settings.PlatformSettings`):

- inbox ids longer than the stream keeps events: a redelivery or replay of an event still in
  the stream must find its id, or it would be applied twice;
- published outbox rows longer than the stream's duplicate window (15 min): nothing reads
  them after that, they are kept for a week for investigation;
- dead letters only once replayed; open ones wait for an operator however old they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter
from psycopg import sql

from libs.database import Pool, safe_database_error
from libs.settings import PlatformSettings
from libs.telemetry import REGISTRY

log = logging.getLogger(__name__)

DAY = 24 * 3600.0

PRUNED_ROWS = Counter(
    "platform_retention_pruned_rows_total",
    "Rows deleted by the retention loop, by rule.",
    ["rule"],
    registry=REGISTRY,
)
PRUNE_ERRORS = Counter(
    "platform_retention_errors_total",
    "Retention passes of a rule that failed (retried next interval).",
    ["rule"],
    registry=REGISTRY,
)


@dataclass(frozen=True)
class RetentionRule:
    """Rows of ``table`` matching ``where`` are deleted; ``%(cutoff)s`` in ``where`` is now
    minus ``keep_seconds``. ``where`` is SQL written in code, never built from input."""

    name: str
    table: str
    where: str
    keep_seconds: float


def kit_rules(settings: PlatformSettings) -> list[RetentionRule]:
    """The kit's own tables, in every service schema."""
    return [
        # created_at (BRIN-indexed) is a lower bound of published_at, so old rows are found cheaply.
        RetentionRule(
            "outbox",
            "outbox",
            "created_at < %(cutoff)s AND published_at < %(cutoff)s",
            settings.retention_outbox_days * DAY,
        ),
        RetentionRule("inbox", "inbox", "received_at < %(cutoff)s", settings.retention_inbox_days * DAY),
        RetentionRule(
            "dead_letters",
            "dead_letters",
            "replayed_at < %(cutoff)s",
            settings.retention_dead_letters_days * DAY,
        ),
    ]


class Retention:
    """The rules of one service and the loop that applies them."""

    def __init__(
        self,
        pool: Pool,
        rules: list[RetentionRule],
        *,
        interval_seconds: float = 3600.0,
        batch_size: int = 1000,
    ) -> None:
        self.pool = pool
        self.rules = list(rules)
        self.interval_seconds = interval_seconds
        self.batch_size = batch_size

    def add(self, rule: RetentionRule) -> None:
        """Prune a service table too (registered by the service's bootstrap)."""
        self.rules.append(rule)

    async def prune_once(self) -> dict[str, int]:
        """Apply every rule until nothing is left to delete; rows deleted by rule.

        A failing rule is logged and counted; the others still run.
        """
        deleted: dict[str, int] = {}
        for rule in self.rules:
            try:
                deleted[rule.name] = await self.prune(rule)
            except Exception as exc:
                PRUNE_ERRORS.labels(rule.name).inc()
                log.warning(
                    "retention pass failed",
                    extra={"fields": {"rule": rule.name, "error": safe_database_error(exc)}},
                )
        return deleted

    async def prune(self, rule: RetentionRule) -> int:
        """Delete ``rule``'s rows in batches, one short transaction each; the total deleted."""
        cutoff = datetime.now(UTC) - timedelta(seconds=rule.keep_seconds)
        table = sql.Identifier(rule.table)
        # ctid addresses the batch's rows without a key column; a row updated meanwhile
        # moved and is simply left for the next pass.
        statement = sql.SQL(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM {table} WHERE {where} LIMIT %(batch)s))"
        ).format(table=table, where=sql.SQL(rule.where))
        total = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(statement, {"cutoff": cutoff, "batch": self.batch_size})
                count = cursor.rowcount
            total += count
            PRUNED_ROWS.labels(rule.name).inc(count)
            if count < self.batch_size:
                break
            await asyncio.sleep(0)  # let the service's own work in between batches
        if total:
            log.info("retention pruned rows", extra={"fields": {"rule": rule.name, "rows": total}})
        return total

    async def run(self, stopping: asyncio.Event) -> None:
        """Prune every ``interval_seconds`` until ``stopping`` (a kit background loop)."""
        while not stopping.is_set():
            await self.prune_once()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.interval_seconds)
