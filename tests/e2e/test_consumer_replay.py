"""``platformctl events replay --consumer``: every service, the gateway and the CLI on real
NATS, Postgres and git, with kmock as the cluster.

After a request is ready, replaying the stream to git-publisher and to the
cluster-bootstrapper re-executes their handlers: no second commit in the bare remote, no
second namespace or object in the cluster, no event published again, and the replay metrics
move. A dry run counts per event type and changes nothing. Bad inputs get clear answers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kmock
import nats
import pytest

from contracts.catalog import SERVICES
from libs.telemetry import REGISTRY
from tests.support.api_flows import PREVIEW
from tests.support.bus import wait_until
from tests.support.gateway import gateway_with_services, mint
from tests.support.git_remotes import BareRemote, bare_remote
from tests.support.isolation import Isolation
from tests.support.kubernetes_emulator import running_emulator, write_kubeconfig
from tests.support.platformctl import clean_env, platformctl

ALICE = {"sub": "alice", "email": "alice@example.com", "teams": ["payments"]}


@pytest.fixture
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with running_emulator() as emu:
        yield emu


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    return bare_remote(tmp_path / "remote.git")


@pytest.fixture
async def platform(
    platform_env: dict[str, str], emulator: kmock.KubernetesEmulator, remote: BareRemote, tmp_path: Path
) -> AsyncIterator[str]:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", {"emulator": str(emulator.url).rstrip("/")}, current="emulator"
    )
    environment = {
        **platform_env,
        "PLATFORM_GITOPS_REPO_URL": remote.url,
        "PLATFORM_GITOPS_REPO_PATH": str(tmp_path / "publisher.git"),
        "PLATFORM_GIT_PUSH_ENABLED": "true",
        "PLATFORM_GIT_BATCH_WINDOW_SECONDS": "0.1",
        "PLATFORM_K8S_APPLY": "true",
        "PLATFORM_KUBECONFIG": str(kubeconfig),
        "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS": "0",
        "PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS": "0",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    async with gateway_with_services(environment, list(SERVICES)) as (base_url, _):
        yield base_url


def cli_env(base_url: str, role: str = "admin") -> dict[str, str]:
    return clean_env(PLATFORM_API=base_url, PLATFORM_TOKEN=mint(role, **ALICE))


def replayed(consumer: str, event_type: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "platform_events_replayed_total", {"consumer": consumer, "event_type": event_type, "outcome": outcome}
    )
    return value or 0.0


def cluster_objects(emulator: kmock.KubernetesEmulator) -> list[tuple[str, str | None, str]]:
    """Every object the emulator holds, as (resource, namespace, name), deleted ones left out."""
    return sorted(
        (str(resource), namespace, name)
        for (resource, namespace, name), obj in emulator.objects.items()
        if not obj.deleted
    )


async def stream_state(nats_url: str, isolation: Isolation) -> tuple[int, dict[str, int]]:
    """The stream's last sequence and its messages per subject."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(isolation.stream, subjects_filter=">")
        return info.state.last_seq, dict(info.state.subjects or {})
    finally:
        await nc.close()


async def ready_request(base_url: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {mint('requester', **ALICE)}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as api:
        created = await api.post("/v1/environment-requests", json=PREVIEW)
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]

        async def ready() -> dict[str, Any] | None:
            view: dict[str, Any] = (await api.get(f"/v1/environment-requests/{request_id}")).json()
            assert view["status"] not in ("failed", "rejected"), view
            return view if view["status"] == "ready" else None

        found: dict[str, Any] = await wait_until(ready, timeout=60, what="the request ready")
        return found


async def test_a_replay_re_executes_publish_and_apply_without_a_second_commit_or_object(
    platform: str,
    nats_url: str,
    isolation: Isolation,
    remote: BareRemote,
    emulator: kmock.KubernetesEmulator,
) -> None:
    request = await ready_request(platform)
    assert request["cluster_status"] == "applied"
    commits = remote.commits()
    assert commits, "the request's commit is in the remote"
    objects = cluster_objects(emulator)
    assert any(name == request["namespace"] for _, _, name in objects)
    env = cli_env(platform)

    # A dry run lists per event type what it would do, and changes nothing.
    last_before, subjects_before = await stream_state(nats_url, isolation)
    dry = await platformctl(
        "events", "replay", "--consumer", "git-publisher", "--from", "1", "--dry-run", "-o", "json", env=env
    )
    assert dry.code == 0, dry.stderr
    plan = dry.json()
    assert plan["dry_run"] is True
    assert plan["from_sequence"] >= 1
    assert plan["to_sequence"] == last_before
    assert {(t["consumer"], t["event_type"], t["messages"], t["action"]) for t in plan["types"]} == {
        ("git-publisher-requests", "request.rendered", 1, "re-execute")
    }
    assert plan["re_executed"] == 1
    assert await stream_state(nats_url, isolation) == (last_before, subjects_before)

    # Intake's projection is skipped, and says so.
    intake_plan = await platformctl(
        "events", "replay", "--consumer", "intake", "--from", "1", "--dry-run", "-o", "json", env=env
    )
    assert intake_plan.code == 0, intake_plan.stderr
    assert intake_plan.json()["skipped"] >= 6
    assert intake_plan.json()["re_executed"] == 0
    assert {t["action"] for t in intake_plan.json()["types"]} == {"skip"}

    # Someone deletes the environment's quota behind the platform's back: the replay's apply
    # puts it back (the handler really runs again), and changes nothing else.
    quota = next(
        key for key, obj in emulator.objects.items() if "resourcequota" in str(key[0]) and not obj.deleted
    )
    emulator.objects[quota].delete()
    assert cluster_objects(emulator) != objects

    # The replay itself: git-publisher and the cluster-bootstrapper run their handlers again.
    pushes = remote.pushes()
    publish_before = replayed("git-publisher-requests", "request.rendered", "re_executed")
    apply_before = replayed("cluster-bootstrapper-published", "request.published", "re_executed")
    for consumer in ("git-publisher", "cluster-bootstrapper"):
        done = await platformctl(
            "events", "replay", "--consumer", consumer, "--from", "1", "-o", "json", env=env
        )
        assert done.code == 0, done.stderr
        assert done.json()["dry_run"] is False
        assert done.json()["re_executed"] == 1

    async def handled() -> bool:
        return (
            replayed("git-publisher-requests", "request.rendered", "re_executed") == publish_before + 1
            and replayed("cluster-bootstrapper-published", "request.published", "re_executed")
            == apply_before + 1
        )

    await wait_until(handled, timeout=30, what="both replays handled")

    # No second commit, no new object, and no event published again: the stream holds the
    # two replay copies and nothing else new.
    assert remote.commits() == commits
    assert remote.pushes() == pushes
    assert cluster_objects(emulator) == objects
    last_after, subjects_after = await stream_state(nats_url, isolation)
    new = {subject: n - subjects_before.get(subject, 0) for subject, n in subjects_after.items()}
    assert {subject: n for subject, n in new.items() if n} == {
        f"{isolation.events_prefix}.replay.git-publisher-requests.request.rendered": 1,
        f"{isolation.events_prefix}.replay.cluster-bootstrapper-published.request.published": 1,
    }
    assert last_after == last_before + 2


async def test_bad_replays_are_refused_with_clear_answers(platform: str) -> None:
    admin = cli_env(platform)

    unknown = await platformctl("events", "replay", "--consumer", "billing", "--from", "1", env=admin)
    assert unknown.code == 3
    assert "unknown service 'billing'" in unknown.stderr

    future = await platformctl("events", "replay", "--consumer", "renderer", "--from", "999999", env=admin)
    assert future.code == 3
    assert "in the future" in future.stderr

    tomorrow = await platformctl(
        "events", "replay", "--consumer", "renderer", "--from", "2999-01-01T00:00:00Z", env=admin
    )
    assert tomorrow.code == 3
    assert "in the future" in tomorrow.stderr

    unparseable = await platformctl(
        "events", "replay", "--consumer", "renderer", "--from", "yesterday", env=admin
    )
    assert unparseable.code == 2
    assert "'yesterday' is neither a stream sequence" in unparseable.stderr

    both = await platformctl(
        "events",
        "replay",
        "--consumer",
        "renderer",
        "--from",
        "1",
        "--service",
        "renderer",
        "--id",
        "1",
        env=admin,
    )
    assert both.code == 2
    assert "two different replays" in both.stderr

    neither = await platformctl("events", "replay", env=admin)
    assert neither.code == 2
    assert "--consumer SERVICE --from" in neither.stderr

    viewer = await platformctl(
        "events", "replay", "--consumer", "renderer", "--from", "1", env=cli_env(platform, "requester")
    )
    assert viewer.code == 4
    assert "admin" in viewer.stderr

    headers = {"Authorization": f"Bearer {mint('approver', **ALICE)}"}
    async with httpx.AsyncClient(base_url=platform, headers=headers, timeout=10) as api:
        refused = await api.post("/v1/consumers/renderer/replay", json={"from_sequence": 1})
    assert refused.status_code == 403, refused.text
    headers = {"Authorization": f"Bearer {mint('admin', **ALICE)}"}
    async with httpx.AsyncClient(base_url=platform, headers=headers, timeout=10) as api:
        no_start = await api.post("/v1/consumers/renderer/replay", json={"dry_run": True})
        assert no_start.status_code == 422, no_start.text
        assert "exactly one of from_sequence and from_time" in no_start.text
