"""Shared fixtures: real servers once per session, a fresh database and stream per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.infrastructure import nats_server, postgres_server
from tests.support.isolation import Isolation, delete_stream, fresh_database, platform_environment


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with nats_server() as url:
        yield url


@pytest.fixture
def database(pg_admin_dsn: str) -> Iterator[str]:
    """A new, empty database for this test; dropped afterwards."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


@pytest.fixture
async def isolation(nats_url: str) -> AsyncIterator[Isolation]:
    isolated = Isolation.new()
    yield isolated
    await delete_stream(nats_url, isolated.stream)


@pytest.fixture
def platform_env(database: str, nats_url: str, isolation: Isolation) -> dict[str, str]:
    """Environment variables that point a service at this test's database and stream."""
    return platform_environment(database, nats_url, isolation)
