"""The renderer service against real NATS JetStream and Postgres, through its composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import psycopg
import pytest
import yaml
from nats.js import JetStreamContext
from psycopg.rows import dict_row

from contracts.envelope import Envelope
from contracts.events import RequestFailed, RequestReconcileRequested, RequestRendered
from libs.service_kit import ServiceKit
from libs.settings import load_settings
from services.renderer.bootstrap import build_renderer
from services.renderer.domain.argocd import APPPROJECT_SCHEMA, project_denial, structure_problems
from services.renderer.settings import RendererSettings
from tests.support.bus import publish_event, stream_events, wait_until
from tests.support.rendered_bundles import CORE_FILES
from tests.support.seed_plans import QUOTAS, REQUEST_ID, seed_plan, seed_spec
from tests.support.services import running_service

CONSUMER = "renderer-reconcile"


@pytest.fixture
def environment(platform_env: dict[str, str]) -> dict[str, str]:
    return {**platform_env, "PLATFORM_GITOPS_REPO_URL": "https://git.example.com/platform/gitops.git"}


@pytest.fixture
async def renderer(environment: dict[str, str]) -> AsyncIterator[ServiceKit]:
    async with running_service("renderer", environment) as kit:
        yield kit


@pytest.fixture
async def js(environment: dict[str, str]) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(environment["PLATFORM_NATS_URL"])
    yield nc.jetstream()
    await nc.close()


def reconcile_requested(
    class_name: str = "preview", generation: int = 1, **plan_changes: Any
) -> RequestReconcileRequested:
    return RequestReconcileRequested(
        request_id=REQUEST_ID,
        generation=generation,
        spec=seed_spec(class_name),
        plan=seed_plan(class_name, **plan_changes),
        requested_by="system",
    )


def rendered_data(envelope: Envelope) -> RequestRendered:
    data = envelope.decode_data()
    assert isinstance(data, RequestRendered)
    return data


async def published(js: JetStreamContext, environment: dict[str, str], event_type: str) -> list[Envelope]:
    return await stream_events(
        js, environment["PLATFORM_EVENTS_STREAM"], environment["PLATFORM_EVENTS_SUBJECT_PREFIX"], event_type
    )


async def publish(js: JetStreamContext, environment: dict[str, str], data: Any, **options: Any) -> Envelope:
    prefix = environment["PLATFORM_EVENTS_SUBJECT_PREFIX"]
    return await publish_event(js, prefix, REQUEST_ID, data, source="intake", **options)


async def bundle_rows(environment: dict[str, str]) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(
        environment["PLATFORM_POSTGRES_DSN"], row_factory=dict_row
    ) as conn:
        cursor = await conn.execute(
            "SELECT request_id, generation, namespace, gitops_path, digest, files FROM renderer.bundles"
            " ORDER BY generation"
        )
        return list(await cursor.fetchall())


async def count_rows(environment: dict[str, str], table: str) -> int:
    async with await psycopg.AsyncConnection.connect(environment["PLATFORM_POSTGRES_DSN"]) as conn:
        row = await (await conn.execute(f"SELECT count(*) FROM renderer.{table}")).fetchone()
        assert row is not None
        return int(row[0])


async def consumer_caught_up(js: JetStreamContext, environment: dict[str, str], stream_seq: int) -> bool:
    info = await js.consumer_info(environment["PLATFORM_EVENTS_STREAM"], CONSUMER)
    return bool(
        info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.stream_seq >= stream_seq
    )


async def test_reconcile_requested_is_rendered_stored_and_announced_once(
    renderer: ServiceKit, js: JetStreamContext, environment: dict[str, str]
) -> None:
    request = reconcile_requested("production", generation=2)
    envelope = await publish(js, environment, request)

    async def rendered_events() -> list[Envelope]:
        return await published(js, environment, "request.rendered")

    [announced] = await wait_until(rendered_events, what="request.rendered on the stream")
    assert announced.source == "renderer"
    assert announced.subject == REQUEST_ID
    rendered = rendered_data(announced)
    assert rendered.generation == 2
    assert rendered.gitops_path == f"clusters/us-west-2/teams/payments/payments-api/{REQUEST_ID}"
    assert rendered.namespace == "payments-payments-api-89abcdef"
    assert rendered.spec == request.spec
    assert rendered.estimated_monthly_cost_usd == 2400.0
    assert rendered.requires_approval is True
    # git-publisher checks the attestations against the plan's quorum.
    assert rendered.approvals_required == request.plan.approvals_required == 1
    assert [file.name for file in rendered.files] == CORE_FILES
    # Exactly the bytes the renderer produces offline for the same input: deterministic.
    expected = build_renderer(load_settings(RendererSettings, environment)).render(
        REQUEST_ID, 2, request.spec, request.plan
    )
    assert [(file.name, file.content) for file in rendered.files] == [
        (f.name, f.content) for f in expected.files
    ]
    assert rendered.digest == expected.digest
    assert '"pods": "64"' in rendered.files[1].content

    [row] = await bundle_rows(environment)
    assert (row["request_id"], row["generation"], row["digest"]) == (REQUEST_ID, 2, rendered.digest)
    assert (row["namespace"], row["gitops_path"]) == (rendered.namespace, rendered.gitops_path)
    assert row["files"] == [msgspec.to_builtins(file) for file in rendered.files]

    # The same event delivered again (a lost ack, bypassing the stream's dedup): no new effect.
    await publish(js, environment, request, envelope=envelope, msg_id=f"{envelope.id}-again")
    info = await js.stream_info(environment["PLATFORM_EVENTS_STREAM"])
    await wait_until(
        lambda: consumer_caught_up(js, environment, info.state.last_seq),
        what="renderer consumed the duplicate",
    )
    assert await count_rows(environment, "outbox") == 1
    assert len(await bundle_rows(environment)) == 1
    assert len(await rendered_events()) == 1


async def test_a_new_event_for_a_rendered_generation_reannounces_the_stored_bundle(
    renderer: ServiceKit, js: JetStreamContext, environment: dict[str, str]
) -> None:
    await publish(js, environment, reconcile_requested())
    [first] = await wait_until(lambda: published(js, environment, "request.rendered"), what="first rendering")

    async def two_announcements() -> list[Envelope]:
        events = await published(js, environment, "request.rendered")
        return events if len(events) == 2 else []

    # An operator replay or an anti-entropy re-request: same generation, a new event id.
    await publish(js, environment, reconcile_requested())
    second = (await wait_until(two_announcements, what="bundle re-announced"))[1]
    assert second.id != first.id
    assert rendered_data(second).digest == rendered_data(first).digest
    assert rendered_data(second).files == rendered_data(first).files
    assert len(await bundle_rows(environment)) == 1


async def test_an_invalid_plan_fails_the_request_without_retrying(
    renderer: ServiceKit, js: JetStreamContext, environment: dict[str, str]
) -> None:
    await publish(js, environment, reconcile_requested(resource_quota={**QUOTAS["preview"], "pods": "lots"}))

    async def failures() -> list[Envelope]:
        return await published(js, environment, "request.failed")

    [envelope] = await wait_until(failures, what="request.failed on the stream")
    failed = envelope.decode_data()
    assert isinstance(failed, RequestFailed)
    assert failed.request_id == REQUEST_ID
    assert failed.generation == 1
    assert failed.stage == "renderer"
    assert failed.attempts == 1
    assert (
        failed.error
        == "invalid bundle: resource quota pods: 'lots' is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"
    )
    assert await bundle_rows(environment) == []
    assert await published(js, environment, "request.rendered") == []
    assert await count_rows(environment, "dead_letters") == 0


async def test_each_environment_gets_a_project_that_confines_its_application(
    renderer: ServiceKit, js: JetStreamContext, environment: dict[str, str]
) -> None:
    """Two teams' environments: each Application is in its own project, and that project
    refuses cluster-scoped kinds, the other team's namespace and the other team's repository."""
    prefix = environment["PLATFORM_EVENTS_SUBJECT_PREFIX"]
    requests = {
        "req-00000000000000a1": seed_spec("preview"),
        "req-00000000000000b2": seed_spec(
            "preview", team="billing", app="ledger", repository="https://github.com/example/ledger.git"
        ),
    }
    for request_id, spec in requests.items():
        event = RequestReconcileRequested(
            request_id=request_id, generation=1, spec=spec, plan=seed_plan("preview"), requested_by="system"
        )
        await publish_event(js, prefix, request_id, event, source="intake")

    async def rendered_events() -> list[Envelope]:
        events = await published(js, environment, "request.rendered")
        return events if len(events) == len(requests) else []

    bundles = {}
    for envelope in await wait_until(rendered_events, what="both bundles on the stream"):
        data = rendered_data(envelope)
        files = {file.name: yaml.safe_load(file.content) for file in data.files}
        bundles[data.request_id] = (data.namespace, files)

    payments_namespace, payments = bundles["req-00000000000000a1"]
    billing_namespace, billing = bundles["req-00000000000000b2"]
    server = "https://kubernetes.default.svc"
    for namespace, files in bundles.values():
        project, application = files["argocd-appproject.yaml"], files["argocd-application.yaml"]
        assert structure_problems(project, APPPROJECT_SCHEMA) == []
        assert application["spec"]["project"] == project["metadata"]["name"]
        [source] = application["spec"]["sources"]
        own = {"repo_url": source["repoURL"], "server": server, "namespace": namespace}
        assert project_denial(project, **own, group="apps", kind="Deployment") is None
        assert (
            project_denial(
                project,
                **{**own, "namespace": None},
                group="rbac.authorization.k8s.io",
                kind="ClusterRoleBinding",
            )
            == "cluster-scoped ClusterRoleBinding is not in the project's clusterResourceWhitelist"
        )
        assert project_denial(project, **own, group="", kind="ResourceQuota") is not None
    payments_project = payments["argocd-appproject.yaml"]
    assert payments_project["metadata"]["name"] != billing["argocd-appproject.yaml"]["metadata"]["name"]
    into_billing = {"repo_url": "https://github.com/example/payments-api.git", "server": server}
    assert (
        project_denial(
            payments_project, **into_billing, namespace=billing_namespace, group="apps", kind="Deployment"
        )
        == f"namespace {billing_namespace} on {server} is not one of the project's destinations"
    )
    from_billing = {"repo_url": "https://github.com/example/ledger.git", "server": server}
    assert (
        project_denial(
            payments_project, **from_billing, namespace=payments_namespace, group="apps", kind="Deployment"
        )
        == "repository https://github.com/example/ledger.git is not one of the project's sourceRepos"
    )
