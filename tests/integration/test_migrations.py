"""The migration runner: versioned, checksummed, serialised by an advisory lock."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg
import pytest

from libs.migrations import Migration, MigrationError, applied_versions, discover, migrate
from libs.settings import child_environment
from services.tools.platformd.registry import BACKEND_SERVICES, service_entry
from tests.support.isolation import Isolation, platform_environment


def platformd_migrate(
    target: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``platformd migrate <target>`` as its own process, the way an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "services.tools.platformd.main", "migrate", target],
        env=child_environment(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_migrations_apply_once_in_order(database: str) -> None:
    migrations = discover("services.intake")
    first = await migrate(database, "intake", migrations)
    assert first == [m.version for m in migrations]
    assert first[0].startswith("kit/")
    assert await migrate(database, "intake", migrations) == []
    assert await applied_versions(database, "intake") == first


async def test_two_migrators_racing_apply_each_migration_once(database: str) -> None:
    slow = [
        Migration("0001_slow", "SELECT pg_sleep(0.3); CREATE TABLE slow (id int);"),
        Migration("0002_next", "CREATE TABLE next_table (id int);"),
    ]
    results = await asyncio.gather(migrate(database, "race", slow), migrate(database, "race", slow))
    # One runner applied both; the other waited for the lock and found nothing to do.
    assert sorted(map(len, results)) == [0, 2]
    assert await applied_versions(database, "race") == ["0001_slow", "0002_next"]


async def test_an_edited_applied_migration_is_refused(database: str) -> None:
    await migrate(database, "edited", [Migration("0001_a", "CREATE TABLE a (id int);")])
    with pytest.raises(MigrationError, match="0001_a of schema edited changed after it was applied"):
        await migrate(database, "edited", [Migration("0001_a", "CREATE TABLE a (id bigint);")])


async def test_failed_migration_leaves_no_half_applied_version(database: str) -> None:
    broken = [
        Migration("0001_ok", "CREATE TABLE ok (id int);"),
        Migration("0002_bad", "CREATE TABLE ok (id int);"),
    ]
    with pytest.raises(psycopg.errors.DuplicateTable):
        await migrate(database, "broken", broken)
    assert await applied_versions(database, "broken") == ["0001_ok"]


def test_platformd_migrate_all_creates_every_service_schema(database: str, nats_url: str) -> None:
    env = platform_environment(database, nats_url, Isolation.new())
    result = platformd_migrate("all", env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert BACKEND_SERVICES, "no backend services to migrate"
    for name in BACKEND_SERVICES:
        assert f"{name}: applied" in result.stdout
    with psycopg.connect(database) as conn:
        schemas = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
    assert {service_entry(name).schema for name in BACKEND_SERVICES} <= schemas
    again = platformd_migrate("intake", env)
    assert again.stdout.strip() == "intake: up to date"


def test_platformd_migrate_reports_an_unreachable_database_without_its_address(nats_url: str) -> None:
    from libs.embedded import free_port

    port = free_port()
    env = platform_environment(f"postgresql://postgres@127.0.0.1:{port}/nowhere", nats_url, Isolation.new())
    result = platformd_migrate("policy", env)
    assert result.returncode == 1
    assert result.stderr.startswith("platformd: database unavailable"), result.stderr
    assert "Traceback" not in result.stderr
    assert str(port) not in result.stderr
    assert "127.0.0.1" not in result.stderr
