"""NATS and Postgres servers that belong to one test, so it may crash and restart them.

The shared test servers (``PLATFORM_TEST_*``) must never be killed; a fault test that takes
the broker or the database down starts its own with these, on its own storage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from libs.embedded import EmbeddedNats, EmbeddedPostgres


@contextlib.contextmanager
def private_nats(sync_always: bool = True) -> Iterator[EmbeddedNats]:
    """A JetStream server on its own store. ``sync_always``: every write is fsynced before it
    is acknowledged, so a SIGKILL loses nothing the services were told is stored."""
    folder = Path(tempfile.mkdtemp(prefix="pcp-private-nats-"))
    server = EmbeddedNats(folder, sync_always=sync_always)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(database: str = "platform", durable: bool = True) -> Iterator[EmbeddedPostgres]:
    """A Postgres cluster with ``database`` created in it.

    ``durable``: Postgres' own defaults (fsync, synchronous commit), which a test that crashes
    the server needs: with ``synchronous_commit=off`` a SIGKILL loses transactions whose
    commit was already reported, a loss the platform is not meant to survive.
    """
    # mkdtemp under /tmp: as root the cluster then lives under /var/tmp (see libs.embedded),
    # and remove_data deletes it there too.
    folder = Path(tempfile.mkdtemp(prefix="pcp-private-pg-"))
    server = EmbeddedPostgres(folder, fast_unsafe=not durable)
    try:
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield server
    finally:
        server.remove_data()
        shutil.rmtree(folder, ignore_errors=True)


def crash_nats(server: EmbeddedNats) -> None:
    """SIGKILL the broker: no clean shutdown, clients see their connections drop."""
    if server.process is not None and server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def crash_postgres(server: EmbeddedPostgres) -> None:
    """SIGKILL the postmaster and all its backends at once, as a machine or OOM crash would;
    the next start runs crash recovery. (Killing only the postmaster leaves backends that
    hold its shared memory, and a new postmaster refuses to start until they are gone.)"""
    process = server.process
    if process is None or process.poll() is not None:
        return
    # Every backend is its own process group leader (Postgres calls setsid in each child),
    # so the postmaster's group is not enough: its children are found by parent pid, with
    # the postmaster stopped first so that it forks no new one meanwhile.
    os.kill(process.pid, signal.SIGSTOP)
    for pid in [process.pid, *_children(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _children(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == parent:
                children.append(int(entry.name))
    return children
