"""Intake shows a stage's wait for an unreachable dependency, and never loops on its own failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import psycopg
import pytest

from contracts.events import RequestDriftDetected, RequestPublished, RequestStageRetrying
from contracts.models import Actor
from contracts.rpc import GetRequest, ListDeadLetters
from libs.rpc import RpcClient
from tests.support.bus import outbox_drained, publish_event, stream_events, wait_until
from tests.support.services import queued_preview, running_services

ALICE = Actor(subject="alice", actor="alice@example.com", role="requester", teams=["payments"])


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> AsyncIterator[RpcClient]:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)
    await nc.close()


async def test_a_retrying_stage_shows_on_the_request_until_it_succeeds(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    prefix = platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"]
    async with running_services(["policy", "intake", "approval"], platform_env) as kits:
        request = await queued_preview(rpc, ALICE)
        request_id, generation = request["id"], request["generation"]
        assert request["next_attempt_at"] is None
        next_attempt_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=60)
        retrying = RequestStageRetrying(
            request_id=request_id,
            generation=generation,
            stage="git_publisher",
            error="git fetch failed",
            attempt=4,
            next_attempt_at=next_attempt_at,
        )
        await publish_event(kits["intake"].js, prefix, request_id, retrying, source="git_publisher")

        async def waiting() -> Any:
            current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
            return current if current["next_attempt_at"] else None

        current = await wait_until(waiting, what="retry shown")
        assert current["status"] == "queued"  # still on its way, not failed
        assert current["last_error"] == "git_publisher: git fetch failed"
        assert datetime.fromisoformat(current["next_attempt_at"]) == next_attempt_at

        published = RequestPublished(
            request_id=request_id,
            generation=generation,
            gitops_path="clusters/x",
            namespace="ns",
            region="us-east-1",
            commit_sha="a" * 40,
            branch="main",
        )
        await publish_event(kits["intake"].js, prefix, request_id, published, source="git_publisher")

        async def moved_on() -> Any:
            current = await rpc.call("intake", "get_request", GetRequest(id=request_id, actor=ALICE))
            return current if current["status"] == "reconciling" else None

        current = await wait_until(moved_on, what="published applied")
        assert (current["last_error"], current["next_attempt_at"]) == (None, None)


async def test_a_projection_that_keeps_failing_is_dead_lettered_once(
    platform_env: dict[str, str], rpc: RpcClient
) -> None:
    environment = {**platform_env, "PLATFORM_RECONCILE_MAX_ATTEMPTS": "2"}
    prefix, stream = platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"], platform_env["PLATFORM_EVENTS_STREAM"]
    async with running_services(["policy", "intake", "approval"], environment) as kits:
        request = await queued_preview(rpc, ALICE)

        async def caught_up() -> bool:
            info = await kits["intake"].js.consumer_info(stream, "intake-requests")
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        # The request's events so far are all projected before its record is broken, so the
        # only event that can fail is the one this test sends.
        dsn = platform_env["PLATFORM_POSTGRES_DSN"]
        await wait_until(lambda: outbox_drained(dsn, "intake"), what="intake's events published")
        await wait_until(caught_up, what="intake caught up")
        # A record intake can no longer read: every projection of an event about it fails.
        with psycopg.connect(platform_env["PLATFORM_POSTGRES_DSN"], autocommit=True) as conn:
            conn.execute(
                "UPDATE intake.requests SET plan = '{\"bogus\": true}' WHERE id = %s", [request["id"]]
            )
        drift = RequestDriftDetected(
            request_id=request["id"], generation=request["generation"], drift_status="in_sync"
        )
        event = await publish_event(
            kits["intake"].js, prefix, request["id"], drift, source="cluster_bootstrapper"
        )

        async def letters() -> list[dict[str, Any]]:
            page = await rpc.call("intake", "list_dead_letters", ListDeadLetters())
            return [item for item in page["items"] if item["consumer"] == "intake-requests"]

        [letter] = await wait_until(letters, what="dead-lettered")
        assert letter["event_id"] == event.id

        await wait_until(caught_up, what="intake caught up")
        await kits["intake"].relay.publish_pending()
        # Nothing was reported about it that intake would project (and fail on) again.
        assert await stream_events(kits["intake"].js, stream, prefix, "request.failed") == []
        await wait_until(caught_up, what="intake caught up")
        assert len(await letters()) == 1
