"""A service schema holding just the kit's tables (outbox, inbox, dead letters), for kit tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from libs.database import Pool, open_pool
from libs.migrations import discover, migrate
from libs.settings import PlatformSettings


@contextlib.asynccontextmanager
async def kit_pool(settings: PlatformSettings, schema: str) -> AsyncIterator[Pool]:
    """A pool whose connections see ``schema``, migrated with the kit's own migrations."""
    dsn = settings.require_dsn()
    await migrate(dsn, schema, discover(None))
    pool = await open_pool(dsn, schema, f"{schema.replace('_', '-')}")
    try:
        yield pool
    finally:
        await pool.close()
