"""A Postgres that stops answering fails calls within the configured bounds, not after minutes.

The private server's processes are frozen with SIGSTOP: their kernel still accepts and
acknowledges TCP, so the connections look alive and only the client's own deadlines can
notice. SIGCONT brings the server back and the same pool serves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from libs.database import DatabaseTimeouts, Pool, open_pool
from libs.embedded import EmbeddedPostgres

TIMEOUTS = DatabaseTimeouts(statement=1.0, lock=0.5, idle_in_transaction=5.0, connect=2.0, pool_wait=1.0)


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A Postgres of this test's own, so it can be frozen without hurting anything else."""
    folder = Path(tempfile.mkdtemp(prefix="pcp-freeze-"))
    server = EmbeddedPostgres(folder, fast_unsafe=True)
    server.start()
    try:
        yield server
    finally:
        with_signal(server, signal.SIGCONT)
        server.remove_data()
        shutil.rmtree(folder, ignore_errors=True)


def server_processes(server: EmbeddedPostgres) -> list[int]:
    """The postmaster and every process it started (backends, checkpointer, walwriter...)."""
    pid_file = server.data_location() / "pgdata" / "postmaster.pid"
    if not pid_file.exists():
        return []
    postmaster = int(pid_file.read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def with_signal(server: EmbeddedPostgres, signum: int) -> None:
    for pid in server_processes(server):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


async def select_one(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT 1 AS one")).fetchone()
    assert row is not None
    return int(row["one"])


async def timed_failure(pool: Pool) -> tuple[float, BaseException]:
    started = time.monotonic()
    try:
        # The outer bound only keeps a regression from hanging the suite.
        await asyncio.wait_for(select_one(pool), 30)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        return time.monotonic() - started, exc
    raise AssertionError("the query succeeded against a frozen server")


async def test_the_pool_sets_the_server_side_timeouts(private_postgres: EmbeddedPostgres) -> None:
    pool = await open_pool(private_postgres.dsn(), "public", "timeouts-test", 2, TIMEOUTS)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT current_setting('statement_timeout') AS statement,"
                " current_setting('lock_timeout') AS lock,"
                " current_setting('idle_in_transaction_session_timeout') AS idle"
            )
            assert await cursor.fetchone() == {"statement": "1s", "lock": "500ms", "idle": "5s"}
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                await conn.execute("SELECT pg_sleep(10)")
            assert time.monotonic() - started < 3
    finally:
        await pool.close()


async def test_a_frozen_server_fails_queries_within_the_bound_and_serves_again_after(
    private_postgres: EmbeddedPostgres,
) -> None:
    pool = await open_pool(private_postgres.dsn(), "public", "timeouts-test", 2, TIMEOUTS)
    try:
        assert await select_one(pool) == 1
        with_signal(private_postgres, signal.SIGSTOP)
        try:
            # The connection in the pool: the round trip is given up after statement + margin (3 s).
            elapsed, error = await timed_failure(pool)
            assert elapsed < TIMEOUTS.answer + 1.5, (elapsed, error)
            # Its replacement cannot connect: the caller waits no longer than the pool wait.
            elapsed, error = await timed_failure(pool)
            assert elapsed < TIMEOUTS.answer + 1.5, (elapsed, error)
        finally:
            with_signal(private_postgres, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert await select_one(pool) == 1
                break
            except (psycopg.OperationalError, PoolTimeout):
                assert time.monotonic() < deadline, "the pool did not recover after SIGCONT"
                await asyncio.sleep(0.2)
    finally:
        await pool.close()
