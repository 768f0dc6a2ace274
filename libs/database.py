"""Postgres access for one service: an async pool pinned to the service's own schema.

Every connection's ``search_path`` is the service schema (and nothing else), so the
service's SQL never names a schema and cannot reach another service's tables by accident.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


def service_conninfo(dsn: str, schema: str, application_name: str) -> str:
    """The DSN with ``search_path`` pinned to ``schema`` and a recognisable application name."""
    check_schema_name(schema)
    params = conninfo_to_dict(dsn)
    options = params.get("options") or ""
    params["options"] = f"{options} -c search_path={schema}".strip()
    params.setdefault("application_name", application_name)
    return make_conninfo(**params)  # type: ignore[arg-type]


async def open_pool(dsn: str, schema: str, application_name: str, max_size: int = 10) -> Pool:
    """Open a pool whose connections see only ``schema``; waits until the first connection works."""
    pool: Pool = AsyncConnectionPool(
        service_conninfo(dsn, schema, application_name),
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        open=False,
        # No check query on every checkout: it doubles the round trips of every transaction.
        # A connection broken by a Postgres restart fails one transaction, which the caller
        # retries (consumers redeliver); the pool then discards the broken connection.
    )
    await pool.open(wait=True, timeout=30)
    return pool


async def connect(
    dsn: str, schema: str, application_name: str, autocommit: bool = False
) -> AsyncConnection[dict[str, Any]]:
    return await AsyncConnection.connect(
        service_conninfo(dsn, schema, application_name), autocommit=autocommit, row_factory=dict_row
    )


def safe_database_error(exc: BaseException) -> str:
    """A description of a database failure that is safe to log or return: no host, DSN or SQL."""
    sqlstate = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    return f"database error {name}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
