"""Opt-in: the Kubernetes adapter against a real cluster (kind, k3d, a dev cluster).

Proves what kmock cannot: that a real apiserver accepts the rendered objects, that
server-side apply creates them without the adapter's create fallback, that read-back
and the semantic comparison agree with what the apiserver stores (defaulted fields,
canonical quantities, added labels), that ``force`` takes a field back from another field
manager, and that namespace deletion is accepted.

Runs only when ``KUBECONFIG`` names a kubeconfig (its current context is used); otherwise
it is skipped with that reason, and a skip never counts as a pass. It works in a
throwaway namespace and deletes it at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest

from services.cluster_bootstrapper.adapters.kubernetes_cluster import KubernetesCluster
from services.cluster_bootstrapper.domain.manifests import ObjectRef, plan_bundle, teardown_order
from services.cluster_bootstrapper.service_layer.handlers import apply_bundle, observe
from tests.support.rendered_bundles import preview_bundle

KUBECONFIG = os.environ.get("KUBECONFIG", "")

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(not KUBECONFIG, reason="opt-in: set KUBECONFIG to a cluster this test may write to"),
]

REGION = "real-cluster"
FIELD_MANAGER = "platform-control-plane-test"


@pytest.fixture
async def cluster() -> AsyncIterator[KubernetesCluster]:
    adapter = KubernetesCluster(
        kubeconfig=Path(KUBECONFIG.split(os.pathsep)[0]),
        contexts={},
        field_manager=FIELD_MANAGER,
        timeout_seconds=30,
    )
    yield adapter
    adapter.close()


def other_manager_sets_pods(namespace: str, pods: str) -> None:
    """Another field manager (a human with kubectl) changes the quota."""
    client = kubernetes.config.new_client_from_config(config_file=KUBECONFIG.split(os.pathsep)[0])
    try:
        kubernetes.client.CoreV1Api(client).patch_namespaced_resource_quota(
            "platform-defaults",
            namespace,
            {"spec": {"hard": {"pods": pods}}},
            field_manager="someone-with-kubectl",
        )
    finally:
        client.close()


async def test_apply_read_back_drift_and_delete_on_a_real_cluster(cluster: KubernetesCluster) -> None:
    token = uuid.uuid4().hex[:8]
    bundle = preview_bundle(request_id=f"req-00000000{token}", team="pcp", app="it", zero_trust=True)
    namespace = bundle.namespace
    objects = plan_bundle(bundle.files, namespace)
    try:
        outcome = await apply_bundle(cluster, REGION, objects, datetime.now(UTC))
        assert outcome.rejected is None
        has_argocd = await cluster.serves(REGION, "argoproj.io/v1alpha1", "Application")
        assert len(outcome.notes) == (0 if has_argocd else 1)

        # A real apiserver defaults fields, adds labels and canonicalises quantities: none of it is drift.
        observed = await observe(cluster, REGION, outcome.applied)
        assert [item for _, items in observed for item in items] == []
        live_namespace: dict[str, Any] | None = await cluster.read(
            REGION, ObjectRef("v1", "Namespace", namespace)
        )
        assert live_namespace is not None
        managers = {entry["manager"] for entry in live_namespace["metadata"].get("managedFields", [])}
        assert FIELD_MANAGER in managers

        await asyncio.to_thread(other_manager_sets_pods, namespace, "25")
        drifted = [item for _, items in await observe(cluster, REGION, outcome.applied) for item in items]
        assert [(item.kind, item.field, item.expected, item.actual) for item in drifted] == [
            ("ResourceQuota", "spec.hard.pods", "10", "25")
        ]

        # force=true takes the field back from the other manager.
        quota = next(obj for obj in outcome.applied if obj.ref.kind == "ResourceQuota")
        await cluster.apply(REGION, quota)
        assert [item for _, items in await observe(cluster, REGION, outcome.applied) for item in items] == []
    finally:
        for ref in teardown_order(objects, namespace):
            await cluster.delete(REGION, ref)
    live = await cluster.read(REGION, ObjectRef("v1", "Namespace", namespace))
    # Namespace deletion is asynchronous: gone, or terminating.
    assert live is None or live.get("status", {}).get("phase") == "Terminating"
    # Deleting again is idempotent: a terminating or missing namespace is not an error.
    await cluster.delete(REGION, ObjectRef("v1", "Namespace", namespace))
