"""A replay page that reads nothing within its time budget never reads as the end of the range.

The real gateway in front of the real policy and renderer (real NATS and Postgres), the
renderer's page budget cut to nothing so that no page can read a message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.support.gateway import auth, gateway_with_services

ADMIN = auth("admin", email="root@example.com", sub="root", ttl=3600)


async def test_an_empty_page_from_a_time_is_an_error_and_from_a_sequence_is_retried(
    platform_env: dict[str, str],
) -> None:
    async with (
        gateway_with_services(platform_env, ["policy", "renderer"]) as (base_url, kits),
        httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=10) as api,
    ):
        kits["renderer"].stream_replay.budget_seconds = 0  # no time to read anything
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        by_time = await api.post("/v1/consumers/renderer/replay", json={"from_time": since, "dry_run": True})
        assert by_time.status_code == 503, by_time.text
        assert "nothing was replayed; run the replay again" in by_time.json()["error"]
        by_sequence = await api.post(
            "/v1/consumers/renderer/replay", json={"from_sequence": 1, "dry_run": True}
        )
        assert by_sequence.status_code == 200, by_sequence.text
        assert by_sequence.json()["next_sequence"] == 1  # the same place again, not "done"
