"""Intake and the cluster-bootstrapper together, with kmock as the cluster: what a user sees
on the request (over RPC) when the cluster changes under a ready environment, and when a
first run fails half-way in the cluster.

Git-publisher's part is played by the test: it publishes ``request.published`` and
``request.unpublished`` as git-publisher would, so the cluster side runs for real.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock
import nats
import psycopg
import pytest

from contracts.events import RequestPublished, RequestUnpublished
from contracts.models import Actor
from contracts.rpc import CreateRequest, GetRequest
from libs.rpc import RpcClient
from libs.service_kit import ServiceKit
from libs.settings import load_settings
from services.cluster_bootstrapper.bootstrap import ClusterBootstrapper, assemble
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings
from services.intake.service_layer.handlers import IntakeService
from tests.support.api_flows import PREVIEW
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.kubernetes_emulator import running_emulator, stored, write_kubeconfig
from tests.support.rendered_bundles import Bundle, preview_bundle
from tests.support.services import catalog_replicated, running_services

ALICE = Actor(subject="alice", actor="alice@example.com", role="requester", teams=["payments"])
REGION = "us-east-1"


@pytest.fixture
async def rpc(platform_env: dict[str, str]) -> AsyncIterator[RpcClient]:
    nc = await nats.connect(platform_env["PLATFORM_NATS_URL"])
    yield RpcClient(nc, platform_env["PLATFORM_RPC_SUBJECT_PREFIX"], timeout=5)
    await nc.close()


@pytest.fixture
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
async def bootstrapper(
    platform_env: dict[str, str], emulator: kmock.KubernetesEmulator, tmp_path: Path
) -> AsyncIterator[ClusterBootstrapper]:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", {"emulator": str(emulator.url).rstrip("/")}, current="emulator"
    )
    environment = {
        **platform_env,
        "PLATFORM_K8S_APPLY": "true",
        "PLATFORM_KUBECONFIG": str(kubeconfig),
        # Scans are run by the tests, so they cannot race with the assertions.
        "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS": "0",
        "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS": "5",
    }
    app = await assemble(load_settings(ClusterBootstrapperSettings, environment))
    await app.kit.start()
    yield app
    await app.kit.stop()
    if app.service.cluster is not None:
        app.service.cluster.close()


def intake_and_friends(platform_env: dict[str, str]) -> Any:
    # The sweeper is run by the tests (IntakeService.expire_due), not on a timer.
    return running_services(
        ["policy", "intake", "approval"], {**platform_env, "PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS": "0"}
    )


async def queued_request(rpc: RpcClient) -> dict[str, Any]:
    await catalog_replicated(rpc)
    created = await rpc.call("intake", "create_request", CreateRequest(body=PREVIEW, actor=ALICE))
    return await wait_for_request(rpc, created["request"]["id"], lambda r: r["status"] == "queued")


async def wait_for_request(rpc: RpcClient, request_id: str, condition: Any, what: str = "") -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        current: dict[str, Any] = await rpc.call(
            "intake", "get_request", GetRequest(id=request_id, actor=ALICE)
        )
        return current if condition(current) else None

    found: dict[str, Any] = await wait_until(reached, what=what or f"request {request_id}")
    return found


def bundle_of(request: dict[str, Any]) -> Bundle:
    return preview_bundle(request_id=request["id"], team=request["team"], app=request["app"])


async def publish_as_git_publisher(kit: ServiceKit, platform_env: dict[str, str], data: Any) -> None:
    await publish_event(
        kit.js, platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"], data.request_id, data, source="git_publisher"
    )


def published(request: dict[str, Any], bundle: Bundle) -> RequestPublished:
    return RequestPublished(
        request_id=request["id"],
        generation=request["generation"],
        gitops_path=f"clusters/{REGION}/teams/payments/api/{request['id']}",
        namespace=bundle.namespace,
        region=REGION,
        commit_sha="0" * 39 + "1",
        branch="main",
        files=bundle.files,
    )


async def test_drift_found_after_ready_shows_on_the_request(
    platform_env: dict[str, str],
    rpc: RpcClient,
    emulator: kmock.KubernetesEmulator,
    bootstrapper: ClusterBootstrapper,
) -> None:
    async with intake_and_friends(platform_env) as kits:
        request = await queued_request(rpc)
        bundle = bundle_of(request)
        await publish_as_git_publisher(kits["intake"], platform_env, published(request, bundle))
        ready = await wait_for_request(rpc, request["id"], lambda r: r["status"] == "ready", "ready")
        assert (ready["cluster_status"], ready["drift_status"], ready["drift_summary"]) == (
            "applied",
            "in_sync",
            [],
        )

        # Someone raises the quota in the cluster; the next scan puts it back and says so.
        quota_key = (kmock.resource("v1/resourcequotas"), bundle.namespace, "platform-defaults")
        emulator.objects[quota_key].patch({"spec": {"hard": {"pods": "99"}}})
        assert (await bootstrapper.service.scan_drift()).outcomes == {"drift_corrected": 1}

        seen = await wait_for_request(
            rpc, request["id"], lambda r: r["drift_status"] != "in_sync", "drift shown on the request"
        )
        assert seen["status"] == "ready"
        assert seen["drift_status"] == "drift_corrected"
        assert seen["drift_summary"] == [
            {
                "kind": "ResourceQuota",
                "name": "platform-defaults",
                "field": "spec.hard.pods",
                "expected": "10",
                "actual": "99",
            }
        ]
        quota = stored(emulator, "v1/resourcequotas", bundle.namespace, "platform-defaults")
        assert quota is not None
        assert quota["spec"]["hard"]["pods"] == "10"


async def test_a_first_run_the_cluster_refused_half_way_still_expires(
    platform_env: dict[str, str],
    rpc: RpcClient,
    emulator: kmock.KubernetesEmulator,
    bootstrapper: ClusterBootstrapper,
) -> None:
    """The namespace was created before the quota was refused: the failed request gets an
    expiry, and intake's sweeper tears it down like a ready one once that has passed."""

    def reject(_: kmock.Request) -> None:
        raise kmock.KubernetesError(status=422, reason="Invalid", message="quota is invalid")

    emulator["post", re.compile(r"/api/v1/namespaces/[^/]+/resourcequotas")] << reject
    async with intake_and_friends(platform_env) as kits:
        request = await queued_request(rpc)
        bundle = bundle_of(request)
        before = datetime.now(UTC)
        await publish_as_git_publisher(kits["intake"], platform_env, published(request, bundle))
        failed = await wait_for_request(rpc, request["id"], lambda r: r["status"] == "failed", "failed")
        assert failed["last_error"].startswith("cluster_bootstrapper: ")
        assert stored(emulator, "v1/namespaces", None, bundle.namespace) is not None  # left behind
        assert failed["expires_at"] is not None
        expires_at = datetime.fromisoformat(failed["expires_at"])
        ttl = timedelta(hours=failed["ttl_hours"])
        assert before + ttl <= expires_at <= datetime.now(UTC) + ttl

        service = IntakeService(pool=kits["intake"].pool, outbox=kits["intake"].outbox)
        assert await service.expire_due() == 0  # not due yet
        # The TTL passes.
        with psycopg.connect(platform_env["PLATFORM_POSTGRES_DSN"], autocommit=True) as conn:
            conn.execute(
                "UPDATE intake.requests SET expires_at = now() - interval '1 second' WHERE id = %s",
                [request["id"]],
            )
        assert await service.expire_due() == 1
        expiring = await rpc.call("intake", "get_request", GetRequest(id=request["id"], actor=ALICE))
        assert (expiring["status"], expiring["generation"]) == ("expiring", 2)

        async def teardown_requested() -> list[Any]:
            events = await stream_events(
                kits["intake"].js,
                platform_env["PLATFORM_EVENTS_STREAM"],
                platform_env["PLATFORM_EVENTS_SUBJECT_PREFIX"],
                "request.teardown_requested",
            )
            return [event.decode_data() for event in events if event.subject == request["id"]]

        [teardown] = await wait_until(teardown_requested, what="teardown requested")
        assert (teardown.reason, teardown.requested_by, teardown.namespace) == (
            "expired",
            "system:expiry",
            bundle.namespace,
        )
        await publish_as_git_publisher(
            kits["intake"],
            platform_env,
            RequestUnpublished(
                request_id=request["id"],
                generation=2,
                gitops_path=teardown.gitops_path,
                namespace=teardown.namespace,
                region=REGION,
                branch="main",
                commit_sha="0" * 39 + "2",
            ),
        )
        deleted = await wait_for_request(rpc, request["id"], lambda r: r["status"] == "deleted", "deleted")
        assert deleted["namespace_deleted"] is True
        assert stored(emulator, "v1/namespaces", None, bundle.namespace) is None
