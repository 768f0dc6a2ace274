"""The git-publisher service end to end: real NATS, Postgres, git and a bare remote."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from nats.js import JetStreamContext

from contracts.attestation import sign_attestation
from contracts.envelope import Envelope
from contracts.events import (
    Attestation,
    RenderedFile,
    RequestFailed,
    RequestPublished,
    RequestRendered,
    RequestTeardownRequested,
    RequestUnpublished,
)
from contracts.models import RequestSpec
from libs.service_kit import ServiceKit
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.git_remotes import BareRemote, bare_remote
from tests.support.isolation import Isolation
from tests.support.services import running_service

CONSUMER = "git-publisher-requests"


def request_id(n: int) -> str:
    return f"req-{n:016x}"


def spec(n: int, class_name: str = "preview") -> RequestSpec:
    return RequestSpec(
        app=f"app{n}",
        team="payments",
        class_name=class_name,
        region="us-east-1",
        ttl_hours=24,
        owner="owner@example.com",
        repository="https://github.com/example/payments.git",
    )


def gitops_path(n: int) -> str:
    return f"clusters/us-east-1/teams/payments/app{n}/{request_id(n)}/"


def rendered(
    n: int,
    generation: int = 1,
    *,
    approvals: list[Attestation] | None = None,
    requires_approval: bool = False,
    approvals_required: int | None = None,
) -> RequestRendered:
    files = [
        RenderedFile(name=name, content=f"# {name} for {request_id(n)} g{generation}\n")
        for name in ("namespace.yaml", "resourcequota.yaml", "argocd-application.yaml")
    ]
    return RequestRendered(
        request_id=request_id(n),
        generation=generation,
        gitops_path=gitops_path(n),
        namespace=f"payments-app{n}-{request_id(n)[-8:]}",
        digest=f"sha256:{n:064x}",
        files=files,
        spec=spec(n, "production" if requires_approval else "preview"),
        approvals=approvals or [],
        requires_approval=requires_approval,
        approvals_required=approvals_required,
    )


def attestation(n: int, secret: str, approver: str = "alice@example.com") -> Attestation:
    decided = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    fields: dict[str, Any] = {
        "request_id": request_id(n),
        "generation": 0,
        "approver": approver,
        "class_name": "production",
        "decided_at": decided,
    }
    return Attestation(**fields, signature=sign_attestation(secret, **fields))


@pytest.fixture
def remote(tmp_path: Path) -> BareRemote:
    return bare_remote(tmp_path / "remote.git")


@pytest.fixture
def env(platform_env: dict[str, str], remote: BareRemote, tmp_path: Path) -> dict[str, str]:
    return {
        **platform_env,
        "PLATFORM_GITOPS_REPO_URL": remote.url,
        "PLATFORM_GITOPS_REPO_PATH": str(tmp_path / "publisher.git"),
        "PLATFORM_GIT_PUSH_ENABLED": "true",
        "PLATFORM_GIT_BATCH_WINDOW_SECONDS": "0.2",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


@pytest.fixture
async def service(env: dict[str, str]) -> AsyncIterator[ServiceKit]:
    async with running_service("git_publisher", env) as kit:
        yield kit


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def events_of(js: JetStreamContext, isolation: Isolation, event_type: str) -> list[Envelope]:
    return await stream_events(js, isolation.stream, isolation.events_prefix, event_type)


def decoded(envelopes: list[Envelope], model: type[Any]) -> list[Any]:
    return [msgspec.json.decode(e.data, type=model) for e in envelopes]


async def wait_for_events(
    js: JetStreamContext, isolation: Isolation, event_type: str, count: int, within: float = 20.0
) -> list[Envelope]:
    async def enough() -> list[Envelope] | None:
        found = await events_of(js, isolation, event_type)
        return found if len(found) >= count else None

    found: list[Envelope] = await wait_until(enough, timeout=within, what=f"{count} {event_type} events")
    return found


async def wait_consumer_idle(js: JetStreamContext, isolation: Isolation) -> None:
    """Until the publisher's consumer has handled everything currently in the stream."""

    async def idle() -> bool:
        # num_pending counts only what the durable's filters select: the stream also holds
        # the publisher's own events (request.failed, ...), which it never receives.
        info = await js.consumer_info(isolation.stream, CONSUMER)
        return bool(info.delivered.consumer_seq > 0 and info.num_ack_pending == 0 and not info.num_pending)

    await wait_until(idle, what="consumer caught up")


async def test_five_bundles_at_once_are_five_commits_in_at_most_two_pushes(
    service: ServiceKit, js: JetStreamContext, isolation: Isolation, remote: BareRemote, env: dict[str, str]
) -> None:
    bundles = [rendered(n) for n in range(1, 6)]
    for bundle in bundles:
        await publish_event(js, isolation.events_prefix, bundle.request_id, bundle, source="renderer")

    published = decoded(await wait_for_events(js, isolation, "request.published", 5), RequestPublished)

    commits = remote.commits()
    assert len(commits) == 5
    assert remote.pushes() <= 2
    by_request = {p.request_id: p for p in published}
    assert sorted(by_request) == sorted(b.request_id for b in bundles)
    for bundle in bundles:
        event = by_request[bundle.request_id]
        assert event.commit_sha in commits
        assert ("Platform-Request", bundle.request_id) in remote.trailers(event.commit_sha)
        assert remote.message(event.commit_sha).startswith(f"reconcile {bundle.request_id} for payments/")
        assert event.generation == 1
        assert event.branch == "main"
        assert event.mode == "direct"
        assert event.region == "us-east-1"
        assert event.namespace == bundle.namespace
        assert event.gitops_path == bundle.gitops_path
        assert event.files == bundle.files
        directory = bundle.gitops_path.rstrip("/")
        assert remote.files(directory) == sorted(f.name for f in bundle.files)
        assert remote.show(f"{directory}/namespace.yaml") + "\n" == bundle.files[0].content
    with psycopg.connect(env["PLATFORM_POSTGRES_DSN"]) as conn:
        rows = conn.execute("SELECT request_id, commit_sha, mode FROM git_publisher.publications").fetchall()
    assert sorted(rows) == sorted((p.request_id, p.commit_sha, "direct") for p in published)


async def test_a_redelivered_rendered_event_publishes_nothing_twice(
    service: ServiceKit, js: JetStreamContext, isolation: Isolation, remote: BareRemote, env: dict[str, str]
) -> None:
    bundle = rendered(1)
    envelope = await publish_event(js, isolation.events_prefix, bundle.request_id, bundle, source="renderer")
    [first] = decoded(await wait_for_events(js, isolation, "request.published", 1), RequestPublished)

    # The same envelope again, past the stream's dedup (as after a lost ack).
    await publish_event(
        js, isolation.events_prefix, bundle.request_id, bundle, envelope=envelope, msg_id="again"
    )
    await wait_consumer_idle(js, isolation)
    assert len(await events_of(js, isolation, "request.published")) == 1
    assert remote.commits() == [first.commit_sha]

    # A crash after the push but before the transaction committed: the inbox row and the
    # publication were rolled back, so the redelivery runs the handler again. The bundle is
    # already on the branch, so no commit is made and the original commit is reported.
    with psycopg.connect(env["PLATFORM_POSTGRES_DSN"]) as conn:
        conn.execute("DELETE FROM git_publisher.inbox WHERE event_id = %s", [envelope.id])
        conn.execute("DELETE FROM git_publisher.publications")
    await publish_event(
        js, isolation.events_prefix, bundle.request_id, bundle, envelope=envelope, msg_id="crash"
    )
    events = decoded(await wait_for_events(js, isolation, "request.published", 2), RequestPublished)
    assert [e.commit_sha for e in events] == [first.commit_sha, first.commit_sha]
    assert remote.commits() == [first.commit_sha]
    assert remote.pushes() == 1


async def test_an_approval_gated_bundle_needs_a_valid_attestation(
    service: ServiceKit, js: JetStreamContext, isolation: Isolation, remote: BareRemote, env: dict[str, str]
) -> None:
    key = env["PLATFORM_ATTESTATION_HMAC_SECRET"]
    forged = rendered(1, approvals=[attestation(1, "not-the-approval-secret")], requires_approval=True)
    unapproved = rendered(2, requires_approval=True)
    # What an approver could make: every approver's CLI holds the approval secret, never the
    # attestation key.
    by_an_approver = rendered(
        4,
        approvals=[
            attestation(4, env["PLATFORM_APPROVAL_HMAC_SECRET"], approver=name) for name in ("x@a", "y@a")
        ],
        requires_approval=True,
        approvals_required=2,
    )
    # A valid attestation, but the plan requires two approvers.
    short_of_quorum = rendered(
        5, approvals=[attestation(5, key)], requires_approval=True, approvals_required=2
    )
    for bundle in (forged, unapproved, by_an_approver, short_of_quorum):
        await publish_event(js, isolation.events_prefix, bundle.request_id, bundle, source="renderer")

    failures = decoded(await wait_for_events(js, isolation, "request.failed", 4), RequestFailed)
    assert sorted(f.request_id for f in failures) == [request_id(n) for n in (1, 2, 4, 5)]
    for failure in failures:
        assert failure.stage == "git_publisher"
        assert failure.error.startswith("approval attestation invalid")
        assert failure.generation == 1
    [quorum_failure] = [f for f in failures if f.request_id == request_id(5)]
    assert "the plan requires 2" in quorum_failure.error
    await wait_consumer_idle(js, isolation)
    assert remote.commits() == []
    assert await events_of(js, isolation, "request.published") == []

    approved = rendered(3, approvals=[attestation(3, key)], requires_approval=True)
    await publish_event(js, isolation.events_prefix, approved.request_id, approved, source="renderer")
    [published] = decoded(await wait_for_events(js, isolation, "request.published", 1), RequestPublished)
    assert published.request_id == request_id(3)
    trailers = remote.trailers(published.commit_sha)
    assert ("Approved-by", "alice@example.com") in trailers
    assert ("Approval-Attestation", approved.approvals[0].signature) in trailers

    both = [attestation(6, key), attestation(6, key, approver="bob@example.com")]
    quorum = rendered(6, approvals=both, requires_approval=True, approvals_required=2)
    await publish_event(js, isolation.events_prefix, quorum.request_id, quorum, source="renderer")
    published_events = decoded(await wait_for_events(js, isolation, "request.published", 2), RequestPublished)
    [second] = [p for p in published_events if p.request_id == request_id(6)]
    trailers = remote.trailers(second.commit_sha)
    assert ("Approved-by", "alice@example.com") in trailers
    assert ("Approved-by", "bob@example.com") in trailers


async def test_teardown_removes_the_directory_and_reports_unpublished(
    service: ServiceKit, js: JetStreamContext, isolation: Isolation, remote: BareRemote
) -> None:
    bundle = rendered(1)
    await publish_event(js, isolation.events_prefix, bundle.request_id, bundle, source="renderer")
    await wait_for_events(js, isolation, "request.published", 1)

    teardown = RequestTeardownRequested(
        request_id=bundle.request_id,
        generation=3,
        spec=bundle.spec,
        gitops_path=bundle.gitops_path,
        namespace=bundle.namespace,
        requested_by="owner@example.com",
    )
    await publish_event(js, isolation.events_prefix, bundle.request_id, teardown, source="intake")
    [unpublished] = decoded(
        await wait_for_events(js, isolation, "request.unpublished", 1), RequestUnpublished
    )

    assert unpublished.commit_sha == remote.commits()[0]
    assert unpublished.region == "us-east-1"
    assert unpublished.branch == "main"
    assert remote.message(unpublished.commit_sha).startswith(
        f"teardown {bundle.request_id} for payments/app1"
    )
    assert remote.files(bundle.gitops_path.rstrip("/")) == []

    # A late bundle of an older generation must not bring the environment back.
    late = rendered(1, generation=2)
    await publish_event(js, isolation.events_prefix, late.request_id, late, source="renderer")
    await wait_consumer_idle(js, isolation)
    assert len(remote.commits()) == 2
    assert len(await events_of(js, isolation, "request.published")) == 1
