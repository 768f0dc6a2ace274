"""Postgres access for one service: an async pool pinned to the service's own schema.

Every connection's ``search_path`` is the service schema (and nothing else), so the
service's SQL never names a schema and cannot reach another service's tables by accident.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg import AsyncConnection, OperationalError
from psycopg import errors as psycopg_errors
from psycopg.abc import RV, PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

if TYPE_CHECKING:
    from libs.settings import DatabaseSettings

Pool = AsyncConnectionPool[AsyncConnection[dict[str, Any]]]

# json and jsonb values go through msgspec, not the standard library's json: the same JSON
# (the server keeps jsonb in its own form whichever writes it) for a fraction of the CPU. The
# services' profiles under load showed json at 6 % of intake's and the renderer's CPU.
set_json_dumps(msgspec.json.encode)
set_json_loads(msgspec.json.decode)

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long a service waits for Postgres, so a stuck or vanished server fails calls quickly.

    ``statement`` and ``lock`` are enforced by the server on every statement of the pool's
    connections, ``idle_in_transaction`` ends sessions a crashed caller left inside a
    transaction (their locks would otherwise be held for good). A server that stops answering
    (frozen, half-open network path) enforces nothing, so the client gives up on its own when a
    round trip takes ``answer_margin`` seconds longer than the statement timeout, and drops
    that connection. TCP keepalives and ``tcp_user_timeout`` notice a dead peer on an idle or
    a sending connection; ``connect`` bounds each new connection; ``pool_wait`` bounds the wait
    for a free connection of the pool.
    """

    statement: float = 30.0
    lock: float = 10.0
    idle_in_transaction: float = 60.0
    connect: float = 10.0
    pool_wait: float = 3.0
    answer_margin: float = 2.0

    @property
    def answer(self) -> float:
        """The client-side bound of one round trip on a pool connection."""
        return self.statement + self.answer_margin

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> DatabaseTimeouts:
        return cls(
            statement=settings.postgres_statement_timeout_seconds,
            lock=settings.postgres_lock_timeout_seconds,
            idle_in_transaction=settings.postgres_idle_in_transaction_timeout_seconds,
            connect=settings.postgres_connect_timeout_seconds,
            pool_wait=settings.postgres_pool_wait_seconds,
        )


# Keepalive probes after 10 s idle, every 5 s, 3 unanswered: a dead peer is noticed in ~25 s
# instead of the kernel's two hours.
_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


# How often psycopg's wait loop wakes while waiting for the socket (its own default).
_POLL_INTERVAL = 0.1


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def service_conninfo(
    dsn: str, schema: str, application_name: str, timeouts: DatabaseTimeouts | None = None
) -> str:
    """The DSN with ``search_path`` pinned to ``schema``, a recognisable application name and,
    unless the DSN sets them, the timeouts and keepalives of ``timeouts``."""
    check_schema_name(schema)
    timeouts = timeouts or DatabaseTimeouts()
    params = conninfo_to_dict(dsn)
    options = [str(params.get("options") or ""), f"-c search_path={schema}"]
    options += [
        f"-c statement_timeout={_ms(timeouts.statement)}",
        f"-c lock_timeout={_ms(timeouts.lock)}",
        f"-c idle_in_transaction_session_timeout={_ms(timeouts.idle_in_transaction)}",
    ]
    params["options"] = " ".join(option for option in options if option).strip()
    params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", str(max(1, round(timeouts.connect))))
    # Unacknowledged data for this long means the peer is gone (a sending connection).
    params.setdefault("tcp_user_timeout", str(_ms(timeouts.answer)))
    for key, value in _KEEPALIVES.items():
        params.setdefault(key, value)
    return make_conninfo(**params)  # type: ignore[arg-type]


def with_tls(dsn: str, sslmode: str | None, sslrootcert: Path | None) -> str:
    """The DSN with ``PLATFORM_POSTGRES_SSLMODE`` / ``PLATFORM_POSTGRES_SSLROOTCERT`` applied:
    set, they win over the DSN's own ``sslmode``/``sslrootcert``; unset, the DSN is unchanged
    (a DSN may carry them itself, as libpq allows)."""
    overrides = {"sslmode": sslmode, "sslrootcert": str(sslrootcert) if sslrootcert else None}
    overrides = {key: value for key, value in overrides.items() if value}
    if not overrides:
        return dsn
    return make_conninfo(dsn, **overrides)


class DeadlineConnection(AsyncConnection[dict[str, Any]]):
    """A connection whose every round trip is bounded by ``answer_timeout`` seconds.

    On expiry the connection is closed (its state is unknown: a statement may still run)
    and :class:`psycopg.OperationalError` raised, which callers already treat as "database
    unavailable, retry": RPC answers ``unavailable``, consumers redeliver, the pool replaces
    the connection. Without it a frozen server holds the caller (and its pool slot) for as
    long as the TCP connection looks alive, which a frozen process's kernel keeps it.
    """

    answer_timeout: float | None = None

    async def wait(
        self, gen: PQGen[RV], interval: float = _POLL_INTERVAL, timeout: float | None = None
    ) -> RV:
        try:
            return await super().wait(gen, interval, timeout if timeout is not None else self.answer_timeout)
        except psycopg_errors._WaitTimeout:  # psycopg's own signal that ``timeout`` expired
            self.pgconn.finish()
            raise OperationalError(
                f"the database did not answer within {self.answer_timeout:.0f}s; connection closed"
            ) from None


async def open_pool(
    dsn: str,
    schema: str,
    application_name: str,
    max_size: int = 10,
    timeouts: DatabaseTimeouts | None = None,
) -> Pool:
    """Open a pool whose connections see only ``schema``; waits until the first connection works.

    Taking a connection waits at most ``timeouts.pool_wait`` seconds, then raises
    :class:`psycopg_pool.PoolTimeout` (RPC answers ``unavailable``).
    """
    timeouts = timeouts or DatabaseTimeouts()

    async def bound(conn: AsyncConnection[Any]) -> None:
        if isinstance(conn, DeadlineConnection):
            conn.answer_timeout = timeouts.answer

    async def reset(conn: AsyncConnection[Any]) -> None:
        # Back in the pool, every connection opens transactions again (see without_transaction).
        await conn.set_autocommit(False)

    pool: Pool = AsyncConnectionPool(
        service_conninfo(dsn, schema, application_name, timeouts),
        min_size=1,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        connection_class=DeadlineConnection,
        configure=bound,
        reset=reset,
        timeout=timeouts.pool_wait,
        open=False,
        # No check query on every checkout: it doubles the round trips of every transaction.
        # A connection broken by a Postgres restart fails one transaction, which the caller
        # retries (consumers redeliver); the pool then discards the broken connection.
    )
    await pool.open(wait=True, timeout=30)
    return pool


@asynccontextmanager
async def without_transaction(pool: Pool) -> AsyncIterator[AsyncConnection[dict[str, Any]]]:
    """A pool connection in autocommit mode, for reads and single self-contained writes.

    A pool connection otherwise wraps even one statement in ``BEGIN`` … ``COMMIT``: three
    round trips where one does. Each statement here commits on its own and reads its own
    snapshot, as it would in a READ COMMITTED transaction; what must commit together still
    belongs in ``conn.transaction()``. The pool's reset hook gives the connection back its
    usual mode when it returns.
    """
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        yield conn


async def connect(
    dsn: str,
    schema: str,
    application_name: str,
    autocommit: bool = False,
    timeouts: DatabaseTimeouts | None = None,
) -> AsyncConnection[dict[str, Any]]:
    """A single connection (a LISTEN session) with the pool's keepalives and timeouts; its
    waits are not bounded by the client, since listening is waiting."""
    return await AsyncConnection.connect(
        service_conninfo(dsn, schema, application_name, timeouts), autocommit=autocommit, row_factory=dict_row
    )


def safe_database_error(exc: BaseException) -> str:
    """A description of a database failure that is safe to log or return: no host, DSN or SQL."""
    sqlstate = getattr(exc, "sqlstate", None)
    name = type(exc).__name__
    return f"database error {name}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
