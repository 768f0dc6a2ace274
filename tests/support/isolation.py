"""Per-test isolation on shared servers: a fresh database, a private stream and subjects."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import nats
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

TEST_JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123"
TEST_APPROVAL_SECRET = "test-approval-secret-long-enough-0123456"
# Distinct from the approval secret, as strict production requires: the tests run the
# services the way production does, not on the development fallback.
TEST_ATTESTATION_SECRET = "test-attestation-key-long-enough-0123456"


def with_database(dsn: str, database: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo(**params)  # type: ignore[arg-type]


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """A new, empty database; dropped afterwards (even with open connections)."""
    name = f"pcp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def row_counts(dsn: str, schemas: Sequence[str]) -> dict[str, int]:
    """Rows of every table of ``schemas`` by ``schema.table``: what a dry run must leave as it was."""
    counts = {}
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE'",
            [list(schemas)],
        ).fetchall()
        for schema, table in tables:
            row = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
            counts[f"{schema}.{table}"] = row[0] if row else 0
    return counts


@dataclass(frozen=True)
class Isolation:
    """Stream and subjects private to one test, on a shared NATS server."""

    token: str

    @classmethod
    def new(cls) -> Isolation:
        return cls(uuid.uuid4().hex[:10])

    @property
    def stream(self) -> str:
        return f"T_{self.token}"

    @property
    def events_prefix(self) -> str:
        return f"t{self.token}.events"

    @property
    def rpc_prefix(self) -> str:
        return f"t{self.token}.rpc"


async def delete_stream(nats_url: str, stream: str) -> None:
    nc = await nats.connect(nats_url)
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_stream(stream)
    await nc.close()


def platform_environment(dsn: str, nats_url: str, isolation: Isolation) -> dict[str, str]:
    """Environment variables that point a service at one test's database and stream."""
    return {
        "PLATFORM_POSTGRES_DSN": dsn,
        "PLATFORM_NATS_URL": nats_url,
        "PLATFORM_EVENTS_STREAM": isolation.stream,
        "PLATFORM_EVENTS_SUBJECT_PREFIX": isolation.events_prefix,
        "PLATFORM_RPC_SUBJECT_PREFIX": isolation.rpc_prefix,
        "PLATFORM_EVENTS_MAX_AGE_DAYS": "1",
        "PLATFORM_AUTO_MIGRATE": "true",
        "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS": "0.2",
        "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS": "1",
        "PLATFORM_OUTBOX_POLL_SECONDS": "0.5",
        "PLATFORM_SHUTDOWN_TIMEOUT_SECONDS": "5",
        "PLATFORM_JWT_HS256_SECRET": TEST_JWT_SECRET,
        "PLATFORM_APPROVAL_HMAC_SECRET": TEST_APPROVAL_SECRET,
        "PLATFORM_ATTESTATION_HMAC_SECRET": TEST_ATTESTATION_SECRET,
        # Suites send requests far faster than people: the gateway's rate limits are off in
        # the shared stacks and tested on their own (tests/integration/test_gateway_rate_limits.py).
        "PLATFORM_RATE_LIMIT_SUBJECT_PER_MINUTE": "0",
        "PLATFORM_RATE_LIMIT_SUBJECT_GENERATIONS_PER_MINUTE": "0",
        "PLATFORM_RATE_LIMIT_TEAM_PER_MINUTE": "0",
    }


@contextlib.contextmanager
def isolated_environment(admin_dsn: str, nats_url: str) -> Iterator[dict[str, str]]:
    """Database + stream + environment for tests that share one stack (module scope)."""
    isolation = Isolation.new()
    with fresh_database(admin_dsn) as dsn:
        try:
            yield platform_environment(dsn, nats_url, isolation)
        finally:
            asyncio.run(delete_stream(nats_url, isolation.stream))
