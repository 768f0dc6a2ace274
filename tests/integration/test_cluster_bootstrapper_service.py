"""The cluster-bootstrapper service against real NATS and Postgres, and kmock as the API server.

The service runs through its own composition root and is fed real envelopes on the test's
stream; what it did is read back from the stream, its schema, and the emulator.

What kmock's ``KubernetesEmulator`` can prove here: the official client's requests reach
an HTTP server unchanged; objects are sent in the right order, as server-side apply
(``PATCH``, ``application/apply-patch+yaml``, ``fieldManager``, ``force=true``) with the
right bodies; read-back, comparison and self-heal work on what the server stores;
teardown sends ``DELETE`` for the namespace and the Argo CD Application; discovery
decides whether the Argo CD CRD is there; a 422 ``Status`` becomes ``apply_failed``.

What it cannot prove (see tests/support/kubernetes_emulator.py): that a real apiserver
accepts the objects (field validation, admission), that apply creates objects (kmock
answers 404, so the adapter's create fallback runs here; a real apiserver never takes
it), field ownership and conflicts under ``force``, defaulting, and namespace
termination. Namespaces are served by a kmock reaction because kmock does not route
their URLs. tests/integration/test_cluster_real.py covers the rest against a real cluster.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import nats
import psycopg
import pytest
from nats.js import JetStreamContext

from contracts.envelope import Envelope, new_event
from contracts.events import RequestBootstrapped, RequestPublished, RequestUnpublished
from libs.settings import load_settings
from services.cluster_bootstrapper.bootstrap import ClusterBootstrapper, assemble
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings
from tests.support.bus import (
    consumer_settled,
    last_seq,
    outbox_drained,
    publish_event,
    stream_events,
    wait_until,
)
from tests.support.delaying_proxy import delaying_proxy
from tests.support.isolation import Isolation
from tests.support.kubernetes_emulator import running_emulator, stored, write_kubeconfig
from tests.support.rendered_bundles import Bundle, preview_bundle
from tests.support.seed_plans import QUOTAS

SCHEMA = "cluster_bootstrapper"
PUBLISHED_CONSUMER = "cluster-bootstrapper-published"
REGION = "us-east-1"
FIELD_MANAGER = "platform-control-plane"
COMMIT = "0" * 39 + "1"


@dataclass
class Harness:
    app: ClusterBootstrapper
    js: JetStreamContext
    isolation: Isolation
    dsn: str

    async def publish(
        self, data: Any, *, envelope: Envelope | None = None, msg_id: str | None = None
    ) -> Envelope:
        return await publish_event(
            self.js, self.isolation.events_prefix, data.request_id, data, envelope=envelope, msg_id=msg_id
        )

    async def events(self, event_type: str) -> list[Envelope]:
        return await stream_events(self.js, self.isolation.stream, self.isolation.events_prefix, event_type)

    async def wait_for(self, event_type: str, count: int = 1) -> list[Any]:
        async def arrived() -> list[Envelope] | None:
            found = await self.events(event_type)
            return found if len(found) >= count else None

        envelopes = await wait_until(arrived, what=f"{count} x {event_type}")
        return [envelope.decode_data() for envelope in envelopes]

    async def published_all(self) -> None:
        """Wait until every event the service staged is on the stream: counting them is final."""
        await wait_until(lambda: outbox_drained(self.dsn, SCHEMA), what="every staged event published")

    async def handled_latest_publication(self) -> None:
        """Wait until the latest request.published was handled and what it staged published."""
        stream, prefix = self.isolation.stream, self.isolation.events_prefix
        past = await last_seq(self.js, stream, prefix, "request.published")
        await wait_until(
            lambda: consumer_settled(self.js, stream, PUBLISHED_CONSUMER, past), what="publication handled"
        )
        await self.published_all()

    def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, row_factory=psycopg.rows.dict_row) as conn:
            conn.execute(f"SET search_path = {SCHEMA}")
            return list(conn.execute(query, params).fetchall())


@pytest.fixture
async def emulator() -> AsyncIterator[kmock.KubernetesEmulator]:
    async with running_emulator() as emu:
        yield emu


def cluster_env(platform_env: dict[str, str], kubeconfig: Path) -> dict[str, str]:
    return {
        **platform_env,
        "PLATFORM_K8S_APPLY": "true",
        "PLATFORM_KUBECONFIG": str(kubeconfig),
        # The current context points at a port nobody listens on: every call reaching the
        # emulator proves the region -> context mapping was used.
        "PLATFORM_K8S_CONTEXTS": f"{REGION}=emulator",
        # Scans are triggered by the tests; the loop would race with their assertions.
        "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS": "0",
        "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS": "5",
    }


def emulator_kubeconfig(tmp_path: Path, emu: kmock.KubernetesEmulator) -> Path:
    return write_kubeconfig(
        tmp_path / "kubeconfig",
        {"emulator": str(emu.url).rstrip("/"), "nowhere": "http://127.0.0.1:9"},
        current="nowhere",
    )


@pytest.fixture
async def start(platform_env: dict[str, str], isolation: Isolation) -> AsyncIterator[Callable[..., Any]]:
    """``await start(env)`` runs the real service; everything started is stopped afterwards."""
    started: list[Harness] = []
    connections: list[Any] = []

    async def run(environment: dict[str, str]) -> Harness:
        settings = load_settings(ClusterBootstrapperSettings, environment)
        app = await assemble(settings)
        await app.kit.start()
        nc = await nats.connect(settings.nats_url.reveal())
        connections.append(nc)
        harness = Harness(app, nc.jetstream(), isolation, settings.require_dsn())
        started.append(harness)
        return harness

    yield run
    for harness in started:
        await harness.app.kit.stop()
        if harness.app.service.cluster is not None:
            harness.app.service.cluster.close()
    for nc in connections:
        await nc.close()


@pytest.fixture
def start_applying(
    start: Callable[..., Any],
    platform_env: dict[str, str],
    emulator: kmock.KubernetesEmulator,
    tmp_path: Path,
) -> Callable[..., Awaitable[Harness]]:
    """``await start_applying(**extra_env)`` runs the service applying to ``emulator``."""

    async def run(**extra_env: str) -> Harness:
        environment = cluster_env(platform_env, emulator_kubeconfig(tmp_path, emulator))
        harness: Harness = await start({**environment, **extra_env})
        return harness

    return run


def published(bundle: Bundle, generation: int = 1) -> RequestPublished:
    return RequestPublished(
        request_id=bundle.request_id,
        generation=generation,
        gitops_path=f"clusters/{REGION}/teams/payments/api/{bundle.request_id}",
        namespace=bundle.namespace,
        region=REGION,
        commit_sha=COMMIT,
        branch="main",
        files=bundle.files,
    )


def unpublished(bundle: Bundle, generation: int) -> RequestUnpublished:
    return RequestUnpublished(
        request_id=bundle.request_id,
        generation=generation,
        gitops_path=f"clusters/{REGION}/teams/payments/api/{bundle.request_id}",
        namespace=bundle.namespace,
        region=REGION,
        branch="main",
    )


def writes(emu: kmock.KubernetesEmulator) -> list[tuple[str, str]]:
    """(method, path) of every write the emulator received, in order."""
    return [
        (str(request.method.value).upper(), request.url.path)
        for request in emu
        if request.method in (kmock.method.PATCH, kmock.method.POST, kmock.method.DELETE)
    ]


# -- apply off ---------------------------------------------------------------------------------------


async def test_with_apply_off_the_environment_is_reported_not_applied(
    start: Callable[..., Any], platform_env: dict[str, str]
) -> None:
    harness = await start({**platform_env, "PLATFORM_K8S_APPLY": "false"})
    bundle = preview_bundle()
    await harness.publish(published(bundle))
    [bootstrapped] = await harness.wait_for("request.bootstrapped")
    assert bootstrapped == RequestBootstrapped(
        request_id=bundle.request_id,
        generation=1,
        cluster_status="not_applied",
        drift_status="not_checked",
        commit_sha=COMMIT,
    )
    await harness.publish(unpublished(bundle, 2))
    [torn_down] = await harness.wait_for("request.torn_down")
    assert (torn_down.generation, torn_down.cluster_status) == (2, "not_applied")
    assert harness.rows("SELECT count(*) AS n FROM applied_objects") == [{"n": 0}]


# -- apply on ----------------------------------------------------------------------------------------


async def test_bootstrap_applies_the_bundle_and_the_drift_scan_heals_it(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    harness = await start_applying()
    await harness.app.service.cluster_ready()  # readiness reaches the mapped context
    bundle = preview_bundle(zero_trust=True)
    ns = bundle.namespace
    await harness.publish(published(bundle))

    [bootstrapped] = await harness.wait_for("request.bootstrapped")
    assert (bootstrapped.cluster_status, bootstrapped.drift_status, bootstrapped.drift_summary) == (
        "applied",
        "in_sync",
        [],
    )
    assert bootstrapped.commit_sha == COMMIT
    # No Argo CD CRDs in this emulator: the project and both Applications are skipped, and
    # the user is told why.
    assert len(bootstrapped.notes) == 3
    assert "AppProject argocd/payments-api-" in bootstrapped.notes[0]
    assert "does not serve AppProject (argoproj.io/v1alpha1)" in bootstrapped.notes[0]
    assert "Application argocd/payments-api-" in bootstrapped.notes[2]
    assert "does not serve Application (argoproj.io/v1alpha1)" in bootstrapped.notes[2]

    # What the emulator holds: every object, with the bundle's values.
    namespace = stored(emulator, "v1/namespaces", None, ns)
    assert namespace is not None
    assert namespace["metadata"]["labels"]["platform.example.com/request-id"] == bundle.request_id
    quota = stored(emulator, "v1/resourcequotas", ns, "platform-defaults")
    assert quota is not None
    assert quota["spec"]["hard"] == QUOTAS["preview"]
    limits = stored(emulator, "v1/limitranges", ns, "platform-defaults")
    assert limits is not None
    assert limits["spec"]["limits"][0]["default"] == {"cpu": "500m", "memory": "512Mi"}
    for policy in ("default-deny-ingress", "default-deny-egress", "allow-dns-egress"):
        stored_policy = stored(emulator, "networking.k8s.io/v1/networkpolicies", ns, policy)
        assert stored_policy is not None, policy
        assert stored_policy["spec"]["podSelector"] == {}
    pack = stored(emulator, "v1/configmaps", ns, "platform-policy-pack")
    assert pack is not None
    assert pack["data"]["quota-profile"] == "small"
    assert not any(key[0].group == "argoproj.io" for key in emulator.objects)

    # How they were sent: server-side apply with the fixed field manager, namespace first.
    applies = [request for request in emulator if request.method == kmock.method.PATCH]
    assert applies, "no server-side apply reached the emulator"
    for request in applies:
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert dict(request.params) == {"fieldManager": FIELD_MANAGER, "force": "true"}
        assert request.headers["Authorization"] == "Bearer test-token"
    order = [
        path.rsplit("/", 2)[-2] if method == "PATCH" else path.rsplit("/", 1)[-1]
        for method, path in writes(emulator)
    ]
    assert order[0] == "namespaces"
    first_seen = list(dict.fromkeys(kind for kind in order if kind != "namespaces"))
    assert first_seen == ["resourcequotas", "limitranges", "networkpolicies", "configmaps"]

    # What the service recorded.
    rows = harness.rows(
        "SELECT kind, name, namespace, outcome, note IS NOT NULL AS noted, digest FROM applied_objects"
        " WHERE request_id = %s AND generation = 1 ORDER BY apply_order",
        bundle.request_id,
    )
    assert [(row["kind"], row["outcome"]) for row in rows] == [
        ("Namespace", "applied"),
        ("ResourceQuota", "applied"),
        ("LimitRange", "applied"),
        ("NetworkPolicy", "applied"),
        ("NetworkPolicy", "applied"),
        ("NetworkPolicy", "applied"),
        ("ConfigMap", "applied"),
        ("AppProject", "skipped"),
        ("Application", "skipped"),
        ("Application", "skipped"),
    ]
    assert rows[-1]["noted"]
    assert all(row["digest"].startswith("sha256:") for row in rows)
    assert [row["status"] for row in harness.rows("SELECT status FROM drift_observations")] == ["in_sync"]

    # Someone edits the live objects: a real change to the quota and a label, and a
    # canonical rewrite of the limit range's quantities, which is not drift.
    quota_key = (kmock.resource("v1/resourcequotas"), ns, "platform-defaults")
    emulator.objects[quota_key].patch({"spec": {"hard": {"pods": "20"}}})
    pack_key = (kmock.resource("v1/configmaps"), ns, "platform-policy-pack")
    emulator.objects[pack_key].patch({"metadata": {"labels": {"platform.example.com/team": "intruder"}}})
    limits_key = (kmock.resource("v1/limitranges"), ns, "platform-defaults")
    edited_limits = limits["spec"]["limits"][0] | {"default": {"cpu": "0.5", "memory": "0.5Gi"}}
    emulator.objects[limits_key].patch({"spec": {"limits": [edited_limits]}})

    report = await harness.app.service.scan_drift()
    assert report.outcomes == {"drift_corrected": 1}
    [detected] = await harness.wait_for("request.drift_detected")
    assert detected.drift_status == "drift_corrected"
    assert {(item.kind, item.field, item.expected, item.actual) for item in detected.drift_summary} == {
        ("ResourceQuota", "spec.hard.pods", "10", "20"),
        ("ConfigMap", 'metadata.labels["platform.example.com/team"]', "payments", "intruder"),
    }
    healed_quota = stored(emulator, "v1/resourcequotas", ns, "platform-defaults")
    assert healed_quota is not None
    assert healed_quota["spec"]["hard"]["pods"] == "10"
    healed_pack = stored(emulator, "v1/configmaps", ns, "platform-policy-pack")
    assert healed_pack is not None
    assert healed_pack["metadata"]["labels"]["platform.example.com/team"] == "payments"

    # Back in sync: the next scan finds nothing and reports nothing new.
    report = await harness.app.service.scan_drift()
    assert report.outcomes == {"in_sync": 1}
    await harness.published_all()
    assert len(await harness.events("request.drift_detected")) == 1
    assert [row["status"] for row in harness.rows("SELECT status FROM drift_observations ORDER BY id")] == [
        "in_sync",
        "drift_corrected",
    ]


async def test_teardown_deletes_the_argo_application_and_the_namespace(
    start: Callable[..., Any], platform_env: dict[str, str], tmp_path: Path
) -> None:
    async with running_emulator(argocd=True) as emu:
        harness = await start(cluster_env(platform_env, emulator_kubeconfig(tmp_path, emu)))
        bundle = preview_bundle()
        ns = bundle.namespace
        application = f"payments-api-{bundle.request_id}"
        await harness.publish(published(bundle))
        [bootstrapped] = await harness.wait_for("request.bootstrapped")
        assert (bootstrapped.cluster_status, bootstrapped.drift_status, bootstrapped.notes) == (
            "applied",
            "in_sync",
            [],
        )
        app_object = stored(emu, "argoproj.io/v1alpha1/applications", "argocd", application)
        assert app_object is not None
        assert app_object["spec"]["destination"]["namespace"] == ns
        assert app_object["spec"]["project"] == application
        # The environment's project is applied before the Applications that name it.
        project = stored(emu, "argoproj.io/v1alpha1/appprojects", "argocd", application)
        assert project is not None
        assert project["spec"]["destinations"] == [
            {"server": "https://kubernetes.default.svc", "namespace": ns}
        ]
        assert project["spec"]["clusterResourceWhitelist"] == []
        argocd_writes = [path for _, path in writes(emu) if path.startswith("/apis/argoproj.io/")]
        # (the emulator's apply falls back to a create: consecutive writes of one kind collapse)
        kinds = [path.split("/")[6] for path in argocd_writes]
        assert [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind] == [
            "appprojects",
            "applications",
        ]
        assert writes(emu)[-1][1].startswith("/apis/argoproj.io/v1alpha1/namespaces/argocd/applications")

        await harness.publish(unpublished(bundle, 2))
        [torn_down] = await harness.wait_for("request.torn_down")
        assert (torn_down.generation, torn_down.cluster_status) == (2, "deleted")
        deletes = [path for method, path in writes(emu) if method == "DELETE"]
        # The Applications before the project they name, the namespace last.
        assert deletes == [
            f"/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/{application}",
            f"/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/{application}-baseline",
            f"/apis/argoproj.io/v1alpha1/namespaces/argocd/appprojects/{application}",
            f"/api/v1/namespaces/{ns}",
        ]
        assert stored(emu, "argoproj.io/v1alpha1/applications", "argocd", application) is None
        assert stored(emu, "argoproj.io/v1alpha1/appprojects", "argocd", application) is None
        assert stored(emu, "v1/namespaces", None, ns) is None

        # The publication of generation 1, delivered again after the teardown (a retry that
        # lost the race), must not bring the namespace back.
        await harness.publish(published(bundle, 1))
        await harness.handled_latest_publication()
        assert len(await harness.events("request.bootstrapped")) == 1
        assert stored(emu, "v1/namespaces", None, ns) is None
        # The environment is no longer scanned.
        assert (await harness.app.service.scan_drift()).outcomes == {}

        # Teardown is idempotent: a second one finds everything gone and still reports success.
        await harness.publish(unpublished(bundle, 2))
        torn = await harness.wait_for("request.torn_down", 2)
        assert torn[-1].cluster_status == "deleted"


async def test_a_redelivered_publication_is_applied_and_reported_once(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    harness = await start_applying()
    bundle = preview_bundle()
    event = published(bundle)
    envelope = new_event("request.published", "git_publisher", bundle.request_id, event)
    # The same event twice, as after a lost ack; distinct Nats-Msg-Ids get past the stream's dedup.
    await harness.publish(event, envelope=envelope, msg_id="first-delivery")
    await harness.publish(event, envelope=envelope, msg_id="second-delivery")

    await harness.handled_latest_publication()
    assert len(await harness.events("request.bootstrapped")) == 1
    # One apply round reached the cluster: one apply per object (the Application is skipped).
    applied_paths = [path for method, path in writes(emulator) if method == "PATCH"]
    assert len(applied_paths) == len(set(applied_paths)) == 5


async def test_an_object_the_cluster_rejects_fails_the_bootstrap_without_retries(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    leaked_value = "999999-not-for-events"

    def reject(_: kmock.Request) -> None:
        # The shape of a real apiserver's 422 Status; its message quotes the offending value.
        message = (
            f'ResourceQuota "platform-defaults" is invalid: spec.hard[pods]: Invalid value: "{leaked_value}"'
        )
        raise kmock.KubernetesError(
            status=422,
            reason="Invalid",
            message=message,
            details={
                "causes": [
                    {"reason": "FieldValueInvalid", "field": "spec.hard[pods]", "message": leaked_value}
                ]
            },
        )

    # kmock answers apply with 404 for a new object, so the adapter's create is what is rejected.
    emulator["post", re.compile(r"/api/v1/namespaces/[^/]+/resourcequotas")] << reject
    harness = await start_applying()
    bundle = preview_bundle()
    await harness.publish(published(bundle))

    [bootstrapped] = await harness.wait_for("request.bootstrapped")
    [failed] = await harness.wait_for("request.failed")
    assert (bootstrapped.cluster_status, bootstrapped.drift_status) == ("apply_failed", "not_checked")
    assert failed.stage == "cluster_bootstrapper"
    assert failed.attempts == 1
    assert failed.error == (
        f"ResourceQuota {bundle.namespace}/platform-defaults was rejected by the cluster of region {REGION}"
        " (HTTP 422 Invalid): spec.hard[pods] (FieldValueInvalid)"
    )
    assert bootstrapped.notes[-1] == failed.error
    assert leaked_value not in failed.error
    assert "127.0.0.1" not in failed.error
    # Not retried, and nothing applied after the rejected quota.
    ns = bundle.namespace
    assert writes(emulator) == [
        ("PATCH", f"/api/v1/namespaces/{ns}"),
        ("PATCH", f"/api/v1/namespaces/{ns}/resourcequotas/platform-defaults"),
        ("POST", f"/api/v1/namespaces/{ns}/resourcequotas"),
    ]
    assert harness.rows("SELECT cluster_status FROM environments") == [{"cluster_status": "apply_failed"}]


async def test_an_api_outage_is_retried_until_the_cluster_answers(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    outage = {"left": 2}

    def unavailable(_: kmock.Request) -> Any:
        if outage["left"] > 0:
            outage["left"] -= 1
            raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd is unhappy")
        # Outage over: this reaction stops matching (kmock disables it) and the emulator's own
        # handling answers from now on.
        raise kmock.ReactionMismatchError

    emulator[re.compile(r"/api/v1/namespaces/[^/]+/limitranges.*")] << unavailable
    harness = await start_applying()
    bundle = preview_bundle()
    await harness.publish(published(bundle))

    [bootstrapped] = await harness.wait_for("request.bootstrapped")
    assert (bootstrapped.cluster_status, bootstrapped.drift_status) == ("applied", "in_sync")
    assert outage["left"] == 0
    assert await harness.events("request.failed") == []
    limits = stored(emulator, "v1/limitranges", bundle.namespace, "platform-defaults")
    assert limits is not None


async def test_an_api_that_stays_down_past_the_retry_window_fails_the_request(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    def unavailable(_: kmock.Request) -> Any:
        raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="down at 10.0.0.1:6443")

    emulator[re.compile(r"/api/v1/namespaces/[^/]+/configmaps.*")] << unavailable
    # A 503 is an outage, retried for PLATFORM_RECONCILE_RETRY_FOR_SECONDS; with no window left
    # the last ordinary attempt gives up.
    harness = await start_applying(
        PLATFORM_RECONCILE_MAX_ATTEMPTS="3", PLATFORM_RECONCILE_RETRY_FOR_SECONDS="0"
    )
    bundle = preview_bundle()
    await harness.publish(published(bundle))

    [failed] = await harness.wait_for("request.failed")
    assert (failed.stage, failed.attempts) == ("cluster_bootstrapper", 3)
    assert failed.error.startswith(
        f"apply ConfigMap {bundle.namespace}/platform-policy-pack failed in the cluster"
    )
    assert "HTTP 503 ServiceUnavailable" in failed.error
    assert "10.0.0.1" not in failed.error
    assert await harness.events("request.bootstrapped") == []
    assert harness.rows("SELECT count(*) AS n FROM dead_letters") == [{"n": 1}]


async def test_an_api_outage_longer_than_the_attempts_only_costs_time(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    """An outage outlasting max_attempts is retried (and reported as retrying), then completes."""
    calls = {"n": 0}

    def down_for_a_while(_: kmock.Request) -> Any:
        calls["n"] += 1
        if calls["n"] <= 4:
            raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="down")
        return None  # fall through to the emulator

    emulator[re.compile(r"/api/v1/namespaces/[^/]+/configmaps.*")] << down_for_a_while
    harness = await start_applying(PLATFORM_RECONCILE_MAX_ATTEMPTS="2")
    bundle = preview_bundle()
    await harness.publish(published(bundle))

    await harness.wait_for("request.bootstrapped")
    retrying = await harness.events("request.stage_retrying")
    assert retrying, "the wait is reported on the request"
    assert all(event.decode_data().stage == "cluster_bootstrapper" for event in retrying)
    assert await harness.events("request.failed") == []
    assert harness.rows("SELECT count(*) AS n FROM dead_letters") == [{"n": 0}]


async def test_a_new_generation_prunes_objects_its_bundle_dropped(
    start_applying: Callable[..., Awaitable[Harness]], emulator: kmock.KubernetesEmulator
) -> None:
    harness = await start_applying()
    with_egress = preview_bundle(zero_trust=True)
    ns = with_egress.namespace
    await harness.publish(published(with_egress, 1))
    await harness.wait_for("request.bootstrapped")
    assert stored(emulator, "networking.k8s.io/v1/networkpolicies", ns, "default-deny-egress") is not None

    await harness.publish(published(preview_bundle(zero_trust=False), 2))
    second = (await harness.wait_for("request.bootstrapped", 2))[-1]
    assert (second.generation, second.cluster_status, second.drift_status) == (2, "applied", "in_sync")
    assert stored(emulator, "networking.k8s.io/v1/networkpolicies", ns, "default-deny-egress") is None
    assert stored(emulator, "networking.k8s.io/v1/networkpolicies", ns, "allow-dns-egress") is None
    assert stored(emulator, "networking.k8s.io/v1/networkpolicies", ns, "default-deny-ingress") is not None
    assert stored(emulator, "v1/namespaces", None, ns) is not None


async def test_a_slow_api_server_holds_no_database_connection(
    start: Callable[..., Any],
    platform_env: dict[str, str],
    emulator: kmock.KubernetesEmulator,
    tmp_path: Path,
) -> None:
    """The Kubernetes calls run with no transaction open: with two pool connections and
    four bootstraps waiting on a slow API server, the service's database stays free."""
    namespace_apply = re.compile(r"/api/v1/namespaces/[^/]+")

    def slow(request: Any) -> bool:
        return bool(request.method == "PATCH" and namespace_apply.fullmatch(request.path))

    async with delaying_proxy(str(emulator.url), delay=2.5, slow=slow) as proxy:
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig",
            {"emulator": proxy.url, "nowhere": "http://127.0.0.1:9"},
            current="nowhere",
        )
        harness = await start({**cluster_env(platform_env, kubeconfig), "PLATFORM_POSTGRES_POOL_MAX": "2"})
        bundles = [preview_bundle(request_id=f"req-{index:016x}") for index in range(1, 5)]
        for bundle in bundles:
            await harness.publish(published(bundle))

        await wait_until(lambda: _true_if(proxy.held >= 2), what="two applies held by the slow API server")
        # A query of the service's own pool runs at once, while the applies wait...
        watch = time.monotonic()
        async with harness.app.kit.pool.connection() as conn:
            await conn.execute("SELECT 1")
        assert time.monotonic() - watch < 1.0
        assert proxy.held >= 2, "the applies were no longer in flight"
        # ... and none of its connections sits in an open transaction meanwhile.
        stuck = harness.rows(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%%' AND state_change < now() - interval '0.5 seconds'"
        )
        assert stuck == [{"n": 0}]

        reports = await harness.wait_for("request.bootstrapped", len(bundles))
        assert {(report.request_id, report.cluster_status) for report in reports} == {
            (bundle.request_id, "applied") for bundle in bundles
        }
        assert proxy.held_total == len(bundles)
        for bundle in bundles:
            assert stored(emulator, "v1/namespaces", None, bundle.namespace) is not None
        # Every lease was given back with the outcome.
        assert harness.rows("SELECT count(*) AS n FROM environment_leases") == [{"n": 0}]


async def _true_if(condition: bool) -> bool:
    return condition


async def test_a_drift_scan_holds_no_transaction_while_the_api_server_answers(
    start: Callable[..., Any],
    platform_env: dict[str, str],
    emulator: kmock.KubernetesEmulator,
    tmp_path: Path,
) -> None:
    slow_reads = {"on": False}

    def slow(request: Any) -> bool:
        return slow_reads["on"] and request.method == "GET" and "/resourcequotas/" in request.path

    async with delaying_proxy(str(emulator.url), delay=2.5, slow=slow) as proxy:
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig",
            {"emulator": proxy.url, "nowhere": "http://127.0.0.1:9"},
            current="nowhere",
        )
        harness = await start({**cluster_env(platform_env, kubeconfig), "PLATFORM_POSTGRES_POOL_MAX": "2"})
        bundle = preview_bundle()
        await harness.publish(published(bundle))
        await harness.wait_for("request.bootstrapped")

        slow_reads["on"] = True
        scan = asyncio.create_task(harness.app.service.scan_drift())
        await wait_until(lambda: _true_if(proxy.held >= 1), what="the scan's read held by the API server")
        await asyncio.sleep(0.6)
        stuck = harness.rows(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%%' AND state_change < now() - interval '0.5 seconds'"
        )
        assert stuck == [{"n": 0}]
        assert proxy.held >= 1, "the read was no longer in flight"
        assert (await scan).outcomes == {"in_sync": 1}
        assert harness.rows("SELECT count(*) AS n FROM environment_leases") == [{"n": 0}]


async def test_teardown_removes_what_every_generation_applied(
    start: Callable[..., Any], platform_env: dict[str, str], tmp_path: Path
) -> None:
    """A re-run the cluster rejected half-way never pruned what the first run applied: the
    teardown still deletes the Argo CD Application the first generation created."""
    async with running_emulator(argocd=True) as emu:
        harness = await start(cluster_env(platform_env, emulator_kubeconfig(tmp_path, emu)))
        first = preview_bundle(zero_trust=True)
        ns = first.namespace
        application = f"payments-api-{first.request_id}"
        await harness.publish(published(first, 1))
        await harness.wait_for("request.bootstrapped")
        assert stored(emu, "argoproj.io/v1alpha1/applications", "argocd", application) is not None

        rejecting = {"on": True}

        def reject(_: kmock.Request) -> None:
            if not rejecting["on"]:
                raise kmock.ReactionMismatchError  # the emulator's own handling answers
            raise kmock.KubernetesError(status=422, reason="Invalid", message="limit range is invalid")

        emu["patch", re.compile(r"/api/v1/namespaces/[^/]+/limitranges/.*")] << reject
        await harness.publish(published(preview_bundle(zero_trust=False), 2))
        second = (await harness.wait_for("request.bootstrapped", 2))[-1]
        assert (second.generation, second.cluster_status) == (2, "apply_failed")
        applied = harness.rows(
            "SELECT generation, kind FROM applied_objects WHERE outcome = 'applied' ORDER BY generation, apply_order"
        )
        assert [row["kind"] for row in applied if row["generation"] == 2] == ["Namespace", "ResourceQuota"]
        egress = ("networking.k8s.io/v1/networkpolicies", ns, "default-deny-egress")
        assert stored(emu, *egress) is not None  # the rejected run pruned nothing

        # The next run goes through: it prunes what generation 1 applied and it dropped.
        rejecting["on"] = False
        await harness.publish(published(preview_bundle(zero_trust=False), 3))
        third = (await harness.wait_for("request.bootstrapped", 3))[-1]
        assert (third.generation, third.cluster_status) == (3, "applied")
        assert stored(emu, *egress) is None

        await harness.publish(unpublished(first, 4))
        [torn_down] = await harness.wait_for("request.torn_down")
        assert (torn_down.generation, torn_down.cluster_status) == (4, "deleted")
        assert stored(emu, "argoproj.io/v1alpha1/applications", "argocd", application) is None
        assert stored(emu, "v1/namespaces", None, ns) is None
        # What is left in the emulator is only what a real apiserver removes with the namespace.
        left = [key for key, obj in emu.objects.items() if not obj.deleted]
        assert left, "the namespace's objects (kmock does not cascade) should still be listed"
        assert {namespace for _, namespace, _ in left} == {ns}
