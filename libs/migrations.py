"""Versioned SQL migrations, one schema per service.

Migrations are numbered SQL files: the kit's own (outbox, inbox, dead letters) from
``libs/sql`` first, then the service's from ``services/<service>/migrations``. Applied
versions are recorded in ``<schema>.schema_migrations`` with a checksum; an applied file
that changed afterwards is an error, not a silent divergence. A session-level advisory
lock per schema serialises migrators, so two replicas starting at once never race.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from psycopg import AsyncConnection, sql

from libs.database import check_schema_name

log = logging.getLogger(__name__)


class MigrationError(Exception):
    """A migration could not be applied, or an applied one was edited."""


@dataclass(frozen=True)
class Migration:
    version: str
    sql_text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql_text.encode()).hexdigest()


def _load_dir(folder: Traversable, prefix: str) -> list[Migration]:
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(f"{prefix}{f.name.removesuffix('.sql')}", f.read_text(encoding="utf-8")) for f in files]


def discover(service_package: str | None) -> list[Migration]:
    """The kit's migrations followed by the service's, in the order they must run."""
    kit = _load_dir(resources.files("libs").joinpath("sql"), "kit/")
    if service_package is None:
        return kit
    service = _load_dir(resources.files(service_package).joinpath("migrations"), "")
    return kit + service


async def migrate(dsn: str, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply pending ``migrations`` to ``schema``; returns the versions applied now."""
    check_schema_name(schema)
    applied_now: list[str] = []
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        # The lock key is derived from the schema so different services migrate in parallel.
        await conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [f"platform-migrate:{schema}"])
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version text PRIMARY KEY, checksum text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(schema))
            )
            cursor = await conn.execute(
                sql.SQL("SELECT version, checksum FROM {}.schema_migrations").format(sql.Identifier(schema))
            )
            done = {row[0]: row[1] for row in await cursor.fetchall()}
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version} of schema {schema} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                    await conn.execute(migration.sql_text.encode())
                    await conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.schema_migrations (version, checksum) VALUES (%s, %s)"
                        ).format(sql.Identifier(schema)),
                        [migration.version, migration.checksum],
                    )
                applied_now.append(migration.version)
                log.info(
                    "applied migration", extra={"fields": {"schema": schema, "version": migration.version}}
                )
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [f"platform-migrate:{schema}"]
            )
    return applied_now


async def applied_versions(dsn: str, schema: str) -> list[str]:
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY applied_at, version").format(
                sql.Identifier(check_schema_name(schema))
            )
        )
        return [row[0] for row in await cursor.fetchall()]
