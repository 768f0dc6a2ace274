"""Shared fixtures: real servers once per session, a fresh database and stream per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import nats
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.infrastructure import nats_server, postgres_server


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


def with_database(dsn: str, database: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def database(pg_admin_dsn: str) -> Iterator[str]:
    """A new, empty database for this test; dropped afterwards."""
    name = f"pcp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_database(pg_admin_dsn, name)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Isolation:
    """Stream and subjects private to one test, on a shared NATS server."""

    token: str

    @property
    def stream(self) -> str:
        return f"T_{self.token}"

    @property
    def events_prefix(self) -> str:
        return f"t{self.token}.events"

    @property
    def rpc_prefix(self) -> str:
        return f"t{self.token}.rpc"


@pytest.fixture
async def isolation(nats_url: str) -> AsyncIterator[Isolation]:
    isolated = Isolation(uuid.uuid4().hex[:10])
    yield isolated
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(isolated.stream)
    except Exception:  # noqa: S110 - the test may not have created a stream
        pass
    await nc.close()


@pytest.fixture
def platform_env(database: str, nats_url: str, isolation: Isolation) -> dict[str, str]:
    """Environment variables that point a service at this test's database and stream."""
    return {
        "PLATFORM_POSTGRES_DSN": database,
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
        "PLATFORM_JWT_HS256_SECRET": "test-jwt-secret-that-is-long-enough-0123",
        "PLATFORM_APPROVAL_HMAC_SECRET": "test-approval-secret-long-enough-0123456",
    }
