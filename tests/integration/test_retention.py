"""Retention: old rows whose job is done are deleted in batches, newer and still-needed ones kept.

Rows are inserted with old timestamps into real service schemas (kit tables, renderer
bundles, cluster-bootstrapper records); one prune pass must delete exactly the expired ones.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from libs.database import Pool
from libs.retention import Retention, kit_rules
from libs.settings import PlatformSettings, load_settings
from libs.telemetry import REGISTRY
from services.cluster_bootstrapper.bootstrap import assemble
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings
from services.renderer.bootstrap import bootstrap as renderer_bootstrap
from services.renderer.settings import RendererSettings
from tests.support.kit_schema import kit_pool

SCHEMA = "retention_test"


@pytest.fixture
async def pool(settings: PlatformSettings) -> AsyncIterator[Pool]:
    async with kit_pool(settings, SCHEMA) as opened:
        yield opened


def pruned(rule: str) -> float:
    return REGISTRY.get_sample_value("platform_retention_pruned_rows_total", {"rule": rule}) or 0.0


async def outbox_row(pool: Pool, name: str, *, created_days: float, published_days: float | None) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO outbox (event_id, event_type, subject, payload, created_at, published_at, quarantined_at)"
            " VALUES (%s, 'request.failed', %s, '\\x00', now() - make_interval(days => %s),"
            " now() - make_interval(days => %s), CASE WHEN %s THEN now() END)",
            [uuid.uuid4(), name, created_days, published_days, name == "quarantined"],
        )


async def names(pool: Pool, query: str) -> list[str]:
    async with pool.connection() as conn:
        return sorted(row["name"] for row in await (await conn.execute(query)).fetchall())


async def test_expired_kit_rows_are_deleted_and_the_rest_kept(settings: PlatformSettings, pool: Pool) -> None:
    # Defaults: published outbox rows 7 days, inbox ids 35 days, replayed dead letters 30 days.
    await outbox_row(pool, "published-8d-ago", created_days=8, published_days=8)
    await outbox_row(pool, "published-6d-ago", created_days=8, published_days=6)
    await outbox_row(pool, "unpublished-old", created_days=40, published_days=None)
    await outbox_row(pool, "quarantined", created_days=40, published_days=None)
    async with pool.connection() as conn:
        for consumer, days in (("inbox-40d", 40), ("inbox-34d", 34), ("inbox-now", 0)):
            await conn.execute(
                "INSERT INTO inbox (consumer, event_id, event_type, received_at)"
                " VALUES (%s, %s, 'request.failed', now() - make_interval(days => %s))",
                [consumer, uuid.uuid4(), days],
            )
        for consumer, created, replayed in (
            ("replayed-31d", 60, 31),
            ("replayed-1d", 60, 1),
            ("open-100d", 100, None),
        ):
            await conn.execute(
                "INSERT INTO dead_letters (consumer, subject, payload, error, attempts, created_at, replayed_at)"
                " VALUES (%s, 's', '\\x00', 'e', 1, now() - make_interval(days => %s),"
                " now() - make_interval(days => %s))",
                [consumer, created, replayed],
            )
    before = {rule: pruned(rule) for rule in ("outbox", "inbox", "dead_letters")}

    deleted = await Retention(pool, kit_rules(settings), batch_size=2).prune_once()

    assert deleted == {"outbox": 1, "inbox": 1, "dead_letters": 1}
    assert await names(pool, "SELECT subject AS name FROM outbox") == [
        "published-6d-ago",
        "quarantined",
        "unpublished-old",
    ]
    assert await names(pool, "SELECT consumer AS name FROM inbox") == ["inbox-34d", "inbox-now"]
    assert await names(pool, "SELECT consumer AS name FROM dead_letters") == ["open-100d", "replayed-1d"]
    assert {rule: pruned(rule) - before[rule] for rule in before} == {
        "outbox": 1,
        "inbox": 1,
        "dead_letters": 1,
    }


async def test_a_large_backlog_is_deleted_in_batches_in_one_pass(
    settings: PlatformSettings, pool: Pool
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, event_type, received_at)"
            " SELECT 'c', gen_random_uuid(), 'request.failed', now() - interval '90 days' - n * interval '1 s'"
            " FROM generate_series(1, 2500) AS n"
        )
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, event_type) SELECT 'c', gen_random_uuid(), 'request.failed'"
            " FROM generate_series(1, 30)"
        )
    retention = Retention(pool, kit_rules(settings), batch_size=100)
    before = pruned("inbox")

    assert (await retention.prune_once())["inbox"] == 2500
    assert pruned("inbox") - before == 2500
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM inbox")).fetchone()
    assert row == {"n": 30}
    assert (await retention.prune_once())["inbox"] == 0


async def test_services_register_their_own_tables(platform_env: dict[str, str]) -> None:
    renderer = await renderer_bootstrap(load_settings(RendererSettings, platform_env))
    cluster = await assemble(
        load_settings(ClusterBootstrapperSettings, {**platform_env, "PLATFORM_K8S_APPLY": "false"})
    )
    try:
        assert "retention" in [name for name, _ in renderer._background]
        async with renderer.pool.connection() as conn:
            for request, days in (("req-old", 40), ("req-new", 2)):
                await conn.execute(
                    "INSERT INTO bundles (request_id, generation, namespace, gitops_path, digest, files, created_at)"
                    " VALUES (%s, 1, 'ns', 'p', 'd', '[]', now() - make_interval(days => %s))",
                    [request, days],
                )
        assert (await renderer.retention.prune_once())["bundles"] == 1
        assert await names(renderer.pool, "SELECT request_id AS name FROM bundles") == ["req-new"]

        await _cluster_records(cluster.kit.pool)
        deleted = await cluster.kit.retention.prune_once()
        assert deleted["applied_objects"] == 2
        assert await names(
            cluster.kit.pool, "SELECT request_id || '/' || generation AS name FROM applied_objects"
        ) == ["req-live/2", "req-recent-teardown/1"]
    finally:
        for kit in (renderer, cluster.kit):
            await kit.nc.close()
            await kit.pool.close()


async def _cluster_records(pool: Pool) -> None:
    """Environments: live at generation 2 (moved on 40 days ago), torn down 40 days ago, torn
    down yesterday; each with applied objects of its generations."""
    async with pool.connection() as conn:
        for request, generation, torn_down_days in (
            ("req-live", 2, None),
            ("req-old-teardown", 1, 40),
            ("req-recent-teardown", 1, 1),
        ):
            await conn.execute(
                "INSERT INTO environments (request_id, generation, region, namespace, cluster_status,"
                " drift_status, torn_down_at, updated_at) VALUES (%s, %s, 'eu', 'ns', 'applied', 'in_sync',"
                " now() - make_interval(days => %s), now() - interval '40 days')",
                [request, generation, torn_down_days],
            )
        for request, generation in (
            ("req-live", 1),
            ("req-live", 2),
            ("req-old-teardown", 1),
            ("req-recent-teardown", 1),
        ):
            await conn.execute(
                "INSERT INTO applied_objects (request_id, generation, region, kind, name, api_version,"
                " digest, apply_order, outcome, manifest) VALUES (%s, %s, 'eu', 'ConfigMap', 'c', 'v1', 'd',"
                " 1, 'applied', %s)",
                [request, generation, json.dumps({})],
            )
