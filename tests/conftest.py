"""Shared fixtures: real servers once per session, a fresh database and stream per test, and
the whole stack as processes once per module for the end-to-end and reliability tests."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from libs.embedded import EXTERNAL_BASE_NAME, EXTERNAL_PARENTS
from tests.support.infrastructure import nats_server, postgres_server
from tests.support.isolation import (
    Isolation,
    delete_stream,
    fresh_database,
    isolated_environment,
    platform_environment,
)
from tests.support.stack import RunningStack, running_stack

TESTS = Path(__file__).resolve().parent
COPIES_BEFORE = pytest.StashKey[set[Path]]()
# The folder a test lives in is its layer; its marker follows, so `-m unit` cannot miss a module
# that forgot to say so.
FOLDER_MARKERS = ("unit", "integration", "e2e", "reliability")


def _installation_copies() -> set[Path]:
    """Copies of Postgres' binaries that embedded servers run from when the virtualenv is out of
    the server user's reach (root): a cache in /var/tmp shared by checkouts and processes."""
    return {copy for parent in EXTERNAL_PARENTS for copy in (parent / EXTERNAL_BASE_NAME).glob("pginstall-*")}


def _is_controller(config: pytest.Config) -> bool:
    """Not one of pytest-xdist's workers: the process that runs first and ends last."""
    return not hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _is_controller(session.config):
        session.config.stash[COPIES_BEFORE] = _installation_copies()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Removed once every worker is done (a test of one may run from a copy another made), and
    # only those this run made, so a run leaves nothing behind in /var/tmp.
    if _is_controller(session.config) and COPIES_BEFORE in session.config.stash:
        for copy in _installation_copies() - session.config.stash[COPIES_BEFORE]:
            shutil.rmtree(copy, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.is_relative_to(TESTS):
            continue
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)


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


@pytest.fixture(scope="module")
def stack_env(pg_admin_dsn: str, nats_url: str) -> Iterator[dict[str, str]]:
    """The database, stream and environment of this module's stack."""
    with isolated_environment(pg_admin_dsn, nats_url) as environment:
        yield environment


@pytest.fixture(scope="module")
def stack_extra_env() -> dict[str, str]:
    """Variables this module's stack gets on top of :func:`stack_env`; override it in a module."""
    return {}


@pytest.fixture(scope="module")
def stack(
    stack_env: dict[str, str],
    stack_extra_env: dict[str, str],
    pg_admin_dsn: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningStack]:
    """All seven services as processes, shared by the tests of one module."""
    with running_stack(stack_env, pg_admin_dsn, tmp_path_factory.mktemp("stack"), stack_extra_env) as running:
        yield running
