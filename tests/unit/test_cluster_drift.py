"""Cluster-bootstrapper domain rules: desired vs live comparison, apply order, bundle guards."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
import yaml

from contracts.events import DriftItem, RenderedFile
from services.cluster_bootstrapper.domain.drift import compare, drift_event_due
from services.cluster_bootstrapper.domain.environment import Environment
from services.cluster_bootstrapper.domain.manifests import (
    DesiredObject,
    InvalidBundle,
    ObjectRef,
    apply_order,
    plan_bundle,
    pruned_by,
    teardown_order,
)
from tests.support.rendered_bundles import preview_bundle

BUNDLE = preview_bundle(zero_trust=True)
NS = BUNDLE.namespace


def desired(kind: str, name: str | None = None) -> DesiredObject:
    return next(
        obj
        for obj in plan_bundle(BUNDLE.files, NS)
        if obj.ref.kind == kind and (name is None or obj.ref.name == name)
    )


def live_copy(obj: DesiredObject) -> dict[str, Any]:
    """What an apiserver returns: our fields plus its own (status, managedFields, defaults)."""
    live = copy.deepcopy(obj.manifest)
    live["metadata"].update(
        uid="6b1f0f3c-0000-4000-8000-000000000001",
        resourceVersion="4242",
        creationTimestamp="2025-01-01T00:00:00Z",
        managedFields=[{"manager": "platform-control-plane", "operation": "Apply"}],
    )
    live["status"] = {"phase": "Active"}
    return live


def diff(obj: DesiredObject, live: dict[str, Any] | None) -> list[DriftItem]:
    return compare(obj, live)


# -- semantic comparison ----------------------------------------------------------------------------


def test_an_object_as_applied_is_in_sync() -> None:
    for obj in plan_bundle(BUNDLE.files, NS):
        assert diff(obj, live_copy(obj)) == [], obj.ref


@pytest.mark.parametrize(
    ("field", "ours", "theirs"),
    [
        ("requests.cpu", "2", "2000m"),
        ("limits.cpu", "4", 4),
        ("requests.memory", "4Gi", "4096Mi"),
        ("limits.memory", "8Gi", "8589934592"),
        ("pods", "10", 10),
    ],
)
def test_quantities_compare_by_value(field: str, ours: str, theirs: Any) -> None:
    quota = desired("ResourceQuota")
    assert quota.manifest["spec"]["hard"][field] == ours
    live = live_copy(quota)
    live["spec"]["hard"][field] = theirs
    assert diff(quota, live) == []


def test_limit_range_quantities_in_canonical_form_are_not_drift() -> None:
    limits = desired("LimitRange")
    live = live_copy(limits)
    live["spec"]["limits"][0]["default"] = {"cpu": "0.5", "memory": "0.5Gi"}
    live["spec"]["limits"][0]["max"]["memory"] = "2048Mi"
    assert diff(limits, live) == []


def test_a_changed_quantity_is_drift_with_both_values() -> None:
    quota = desired("ResourceQuota")
    live = live_copy(quota)
    live["spec"]["hard"]["pods"] = "20"
    live["spec"]["hard"]["limits.memory"] = "9Gi"
    assert diff(quota, live) == [
        DriftItem(
            kind="ResourceQuota", name="platform-defaults", field="spec.hard.pods", expected="10", actual="20"
        ),
        DriftItem(
            kind="ResourceQuota",
            name="platform-defaults",
            field='spec.hard["limits.memory"]',
            expected="8Gi",
            actual="9Gi",
        ),
    ]


def test_quantity_rules_do_not_apply_to_opaque_config_data() -> None:
    pack = desired("ConfigMap")
    live = live_copy(pack)
    live["data"]["estimated-monthly-cost-usd"] = "150.0"
    assert [item.field for item in diff(pack, live)] == ["data.estimated-monthly-cost-usd"]


def test_a_missing_field_is_drift() -> None:
    quota = desired("ResourceQuota")
    live = live_copy(quota)
    del live["spec"]["hard"]["services"]
    assert diff(quota, live) == [
        DriftItem(
            kind="ResourceQuota",
            name="platform-defaults",
            field="spec.hard.services",
            expected="4",
            actual=None,
        )
    ]


def test_a_missing_object_is_drift() -> None:
    policy = desired("NetworkPolicy", "default-deny-ingress")
    assert diff(policy, None) == [
        DriftItem(
            kind="NetworkPolicy",
            name="default-deny-ingress",
            field="object",
            expected="present",
            actual="missing",
        )
    ]


def test_fields_we_did_not_set_are_not_drift() -> None:
    namespace = desired("Namespace")
    live = live_copy(namespace)
    live["spec"] = {"finalizers": ["kubernetes"]}  # defaulted by the apiserver
    live["metadata"]["labels"]["kubernetes.io/metadata.name"] = NS  # added by the apiserver
    live["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "x"}  # added by Argo CD
    assert diff(namespace, live) == []

    dns = desired("NetworkPolicy", "allow-dns-egress")
    live = live_copy(dns)
    live["spec"]["egress"][0]["ports"][0]["endPort"] = 53  # a field inside a list element we did not set
    assert diff(dns, live) == []


def test_label_changes_are_drift() -> None:
    pack = desired("ConfigMap")
    live = live_copy(pack)
    live["metadata"]["labels"]["platform.example.com/team"] = "someone-else"
    del live["metadata"]["labels"]["platform.example.com/class"]
    assert diff(pack, live) == [
        DriftItem(
            kind="ConfigMap",
            name="platform-policy-pack",
            field='metadata.labels["platform.example.com/team"]',
            expected="payments",
            actual="someone-else",
        ),
        DriftItem(
            kind="ConfigMap",
            name="platform-policy-pack",
            field='metadata.labels["platform.example.com/class"]',
            expected="preview",
            actual=None,
        ),
    ]


def test_an_empty_map_in_the_bundle_equals_an_absent_field() -> None:
    policy = desired("NetworkPolicy", "default-deny-ingress")
    live = live_copy(policy)
    del live["spec"]["podSelector"]
    assert diff(policy, live) == []


def test_narrowing_a_selector_is_drift() -> None:
    policy = desired("NetworkPolicy", "default-deny-ingress")
    live = live_copy(policy)
    live["spec"]["podSelector"] = {"matchLabels": {"app": "only-this"}}
    assert diff(policy, live) == [
        DriftItem(
            kind="NetworkPolicy",
            name="default-deny-ingress",
            field="spec.podSelector.matchLabels",
            expected=None,
            actual={"app": "only-this"},
        )
    ]


def test_a_list_that_changed_length_is_one_difference() -> None:
    policy = desired("NetworkPolicy", "default-deny-ingress")
    live = live_copy(policy)
    live["spec"]["policyTypes"] = ["Ingress", "Egress"]
    assert diff(policy, live) == [
        DriftItem(
            kind="NetworkPolicy",
            name="default-deny-ingress",
            field="spec.policyTypes",
            expected=["Ingress"],
            actual=["Ingress", "Egress"],
        )
    ]


def test_a_boolean_is_not_a_number() -> None:
    application = desired("Application")
    live = live_copy(application)
    live["spec"]["syncPolicy"]["automated"]["prune"] = 1
    assert [item.field for item in diff(application, live)] == ["spec.syncPolicy.automated.prune"]


# -- bundle planning and apply order -----------------------------------------------------------------


def test_apply_order_puts_the_namespace_first_and_the_argo_application_last() -> None:
    shuffled = list(BUNDLE.files)
    random.Random(7).shuffle(shuffled)
    kinds = [obj.ref.kind for obj in plan_bundle(shuffled, NS)]
    assert kinds[0] == "Namespace"
    assert kinds[-1] == "Application"
    assert kinds[1:3] == ["ResourceQuota", "LimitRange"]
    assert kinds.index("NetworkPolicy") < kinds.index("ConfigMap")


def test_apply_order_keeps_bundle_order_among_equals() -> None:
    policies = [obj.ref.name for obj in plan_bundle(BUNDLE.files, NS) if obj.ref.kind == "NetworkPolicy"]
    assert policies == ["default-deny-ingress", "default-deny-egress", "allow-dns-egress"]
    extra = DesiredObject(ObjectRef("v1", "ServiceAccount", "deployer", NS), {}, rank=20)
    ordered = apply_order([*plan_bundle(BUNDLE.files, NS), extra])
    kinds = [obj.ref.kind for obj in ordered]
    assert kinds.index("LimitRange") < kinds.index("ServiceAccount") < kinds.index("NetworkPolicy")


def test_the_plan_fills_in_the_namespace_and_marks_the_argo_objects_optional() -> None:
    files = [
        BUNDLE.files[0],
        RenderedFile(
            name="extra.yml",
            content="apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: deployer\n",
        ),
        *BUNDLE.files[1:],
    ]
    plan = plan_bundle(files, NS)
    account = next(obj for obj in plan if obj.ref.kind == "ServiceAccount")
    assert account.ref == ObjectRef("v1", "ServiceAccount", "deployer", NS)
    assert account.manifest["metadata"]["namespace"] == NS
    argocd = [obj for obj in plan if obj.ref.group == "argoproj.io"]
    assert sorted(obj.ref.kind for obj in argocd) == ["AppProject", "Application", "Application"]
    assert all(obj.optional and obj.ref.namespace == "argocd" for obj in argocd)
    assert not any(obj.optional for obj in plan if obj.ref.group != "argoproj.io")
    # The project exists before the Applications that name it, and outlives them at teardown.
    kinds = [obj.ref.kind for obj in plan]
    assert kinds[-3:] == ["AppProject", "Application", "Application"]
    deleted = [ref.kind for ref in teardown_order(plan, NS)]
    assert deleted == ["Application", "Application", "AppProject", "Namespace"]
    namespace = plan[0]
    assert namespace.ref == ObjectRef("v1", "Namespace", NS, None)


def test_lists_multi_document_files_and_build_files_are_understood() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "b"}},
        ],
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [],
    }
    files = [
        *BUNDLE.files,
        RenderedFile(name="accounts.yaml", content=yaml.safe_dump(listing)),
        RenderedFile(name="kustomization.yaml", content=yaml.safe_dump(kustomization)),
        RenderedFile(name="README.md", content="not a manifest"),
    ]
    names = [obj.ref.name for obj in plan_bundle(files, NS) if obj.ref.kind == "ServiceAccount"]
    assert names == ["a", "b"]
    assert not any(obj.ref.kind == "Kustomization" for obj in plan_bundle(files, NS))


def test_digest_is_a_function_of_the_manifest() -> None:
    first = plan_bundle(BUNDLE.files, NS)
    second = plan_bundle(preview_bundle(zero_trust=True).files, NS)
    assert [obj.digest for obj in first] == [obj.digest for obj in second]
    assert len({obj.digest for obj in first}) == len(first)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: kube-system\n",
            "targets namespace",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: x\n",
            "cluster-scoped",
        ),
        ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: someone-elses\n", "is not the environment"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "without metadata.name"),
        ("kind: ConfigMap\nmetadata:\n  name: x\n", "without apiVersion"),
        ("- just\n- a list\n", "must be a Kubernetes object"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n", "not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: platform-policy-pack\n", "appears twice"),
    ],
)
def test_bundles_reaching_outside_the_environment_are_refused(content: str, message: str) -> None:
    files = [*BUNDLE.files, RenderedFile(name="extra.yaml", content=content)]
    with pytest.raises(InvalidBundle, match=message):
        plan_bundle(files, NS)


def test_a_bundle_without_its_namespace_is_refused() -> None:
    with pytest.raises(InvalidBundle, match="does not declare its Namespace"):
        plan_bundle(BUNDLE.files[1:], NS)
    with pytest.raises(InvalidBundle, match="no Kubernetes objects"):
        plan_bundle([], NS)


def test_teardown_deletes_objects_outside_the_namespace_before_the_namespace() -> None:
    refs = teardown_order(plan_bundle(BUNDLE.files, NS), NS)
    # Reverse apply order outside the namespace: the Applications before the project they name.
    assert [(ref.kind, ref.namespace) for ref in refs] == [
        ("Application", "argocd"),
        ("Application", "argocd"),
        ("AppProject", "argocd"),
        ("Namespace", None),
    ]
    assert refs[-1].name == NS


def test_teardown_deletes_what_any_generation_applied_once_each() -> None:
    first = plan_bundle(BUNDLE.files, NS)
    renamed = [
        DesiredObject(ObjectRef("v1", "Namespace", "payments-api-old"), {}),
        DesiredObject(ObjectRef("argoproj.io/v1alpha1", "Application", "payments-api-old", "argocd"), {}),
    ]
    refs = teardown_order([*first, *first, *renamed], NS)
    current = f"payments-api-{BUNDLE.request_id}"
    assert [(ref.kind, ref.namespace, ref.name) for ref in refs] == [
        ("Application", "argocd", current),
        ("Application", "argocd", f"{current}-baseline"),
        ("AppProject", "argocd", current),
        ("Application", "argocd", "payments-api-old"),
        ("Namespace", None, "payments-api-old"),
        ("Namespace", None, NS),
    ]


def test_the_test_bundle_is_valid_kubernetes() -> None:
    """The fixture the cluster tests apply must be what a real apiserver accepts."""
    for document in BUNDLE.objects():
        if document["apiVersion"].startswith("argoproj.io/"):
            continue  # CRDs: no schema in the Kubernetes OpenAPI documents
        kubernetes_validate.validate(document, "1.30.0", strict=True)


# -- drift reporting and generations ---------------------------------------------------------------


ITEM = DriftItem(
    kind="ResourceQuota", name="platform-defaults", field="spec.hard.pods", expected="10", actual="20"
)
OTHER = DriftItem(kind="ConfigMap", name="platform-policy-pack", field="data.x", expected="a", actual="b")


@pytest.mark.parametrize(
    ("previous", "previous_summary", "status", "summary", "due"),
    [
        ("in_sync", [], "in_sync", [], False),
        ("in_sync", [], "drift_corrected", [ITEM], True),
        ("drift_corrected", [ITEM], "drift_corrected", [ITEM], True),  # every correction is reported
        ("drift_corrected", [ITEM], "in_sync", [], False),
        ("in_sync", [], "drifted", [ITEM], True),
        ("drifted", [ITEM], "drifted", [ITEM], False),  # stuck drift is not re-reported every scan
        ("drifted", [ITEM], "drifted", [ITEM, OTHER], True),
        ("drifted", [ITEM], "in_sync", [], True),
    ],
)
def test_when_a_scan_reports_drift(
    previous: str, previous_summary: list[DriftItem], status: Any, summary: list[DriftItem], due: bool
) -> None:
    assert drift_event_due(previous, previous_summary, status, summary) is due


def test_later_generations_and_teardowns_supersede_a_publication() -> None:
    env = Environment(
        request_id="req-1", generation=3, region="us-east-1", namespace=NS, cluster_status="applied"
    )
    assert env.supersedes(2)
    assert not env.supersedes(3)  # a re-publication of the same generation is applied again
    assert not env.supersedes(4)
    env.torn_down_at = datetime.now(UTC)
    assert env.supersedes(3)
    assert not env.scannable


def test_a_new_generation_prunes_what_it_dropped_but_never_the_namespace() -> None:
    before = plan_bundle(preview_bundle(zero_trust=True).files, NS)
    after = plan_bundle(preview_bundle(zero_trust=False).files, NS)
    assert sorted(ref.name for ref in pruned_by(before, after)) == ["allow-dns-egress", "default-deny-egress"]
    assert pruned_by(after, after) == []
    assert pruned_by(before, []) == [obj.ref for obj in before if obj.ref.kind != "Namespace"]
