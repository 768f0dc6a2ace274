"""The renderer's bundles: layout, contents per seed class, golden bytes, safety, failures.

Golden files live in ``tests/unit/golden/renderer/<class>/``; after an intended change,
regenerate them with ``PLATFORM_UPDATE_GOLDEN=1 pytest tests/unit/test_renderer_rendering.py``
and review the diff.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import msgspec
import pytest
import yaml

from contracts.kubernetes_names import label_value_problem
from contracts.models import LimitRangeValues, PackManifest
from libs.settings import SettingsError, load_settings
from services.renderer.adapters.templates import ManifestTemplates, RawValueInTemplate, manifest_environment
from services.renderer.bootstrap import build_renderer
from services.renderer.domain.argocd import APPPROJECT_SCHEMA, project_denial, structure_problems
from services.renderer.domain.bundle import Bundle, BundleInvalid, bundle_digest
from services.renderer.domain.layout import namespace_name
from services.renderer.service_layer.rendering import BundleRenderer
from services.renderer.settings import RendererSettings
from tests.support.rendered_bundles import CORE_FILES
from tests.support.seed_plans import CLASSES, LIMITS, QUOTAS, REQUEST_ID, catalog_plan, seed_plan, seed_spec

GOLDEN = Path(__file__).parent / "golden" / "renderer"
GITOPS_URL = "https://git.example.com/platform/gitops.git"
SEED_CLASSES = sorted(CLASSES)
PREFIX = "platform.example.com"


@pytest.fixture(scope="module")
def renderer() -> BundleRenderer:
    return build_renderer(load_settings(RendererSettings, {"PLATFORM_GITOPS_REPO_URL": GITOPS_URL}))


def render(renderer: BundleRenderer, class_name: str, **spec_changes: Any) -> Bundle:
    return renderer.render(REQUEST_ID, 1, seed_spec(class_name, **spec_changes), seed_plan(class_name))


def objects(bundle: Bundle) -> dict[str, Any]:
    """Each file parsed; exactly one document per file."""
    parsed = {}
    for file in bundle.files:
        documents = list(yaml.safe_load_all(file.content))
        assert len(documents) == 1, file.name
        parsed[file.name] = documents[0]
    return parsed


def platform_labels(class_name: str) -> dict[str, str]:
    return {
        f"{PREFIX}/team": "payments",
        f"{PREFIX}/app": "payments-api",
        f"{PREFIX}/class": class_name,
        f"{PREFIX}/quota-profile": CLASSES[class_name][2],
        f"{PREFIX}/request-id": REQUEST_ID,
    }


# -- layout and contents --------------------------------------------------------------------------


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_bundle_has_the_six_files_in_the_request_directory(renderer: BundleRenderer, class_name: str) -> None:
    bundle = render(renderer, class_name)
    region = CLASSES[class_name][0]
    assert [file.name for file in bundle.files] == CORE_FILES
    assert bundle.gitops_path == f"clusters/{region}/teams/payments/payments-api/{REQUEST_ID}"
    assert bundle.namespace == "payments-payments-api-89abcdef"


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_every_object_carries_the_platform_labels(renderer: BundleRenderer, class_name: str) -> None:
    parsed = objects(render(renderer, class_name))
    for name, manifest in parsed.items():
        labels = manifest["metadata"]["labels"]
        if name == "namespace.yaml":
            assert labels == {**platform_labels(class_name), "cost-center": "cc-42"}
        else:
            assert labels == platform_labels(class_name), name


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_namespace(renderer: BundleRenderer, class_name: str) -> None:
    namespace = objects(render(renderer, class_name))["namespace.yaml"]
    assert namespace["apiVersion"] == "v1"
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == "payments-payments-api-89abcdef"
    assert "namespace" not in namespace["metadata"]
    assert namespace["metadata"]["annotations"] == {
        f"{PREFIX}/owner": "alice@example.com",
        # Argo CD never prunes it (an earlier release's Application stops listing it).
        "argocd.argoproj.io/sync-options": "Prune=false",
    }


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_resource_quota_matches_the_class_table(renderer: BundleRenderer, class_name: str) -> None:
    quota = objects(render(renderer, class_name))["resourcequota.yaml"]
    assert quota["apiVersion"] == "v1"
    assert quota["kind"] == "ResourceQuota"
    assert quota["metadata"]["name"] == "platform-defaults"
    assert quota["metadata"]["namespace"] == "payments-payments-api-89abcdef"
    # Quantities stay strings, exactly as SPEC.md lists them.
    assert quota["spec"] == {"hard": QUOTAS[class_name]}
    expected = {
        "preview": ("10", "4", "4", "2", "4Gi", "4", "8Gi"),
        "shared-staging": ("24", "10", "8", "8", "16Gi", "16", "32Gi"),
        "production": ("64", "32", "24", "24", "48Gi", "48", "96Gi"),
    }[class_name]
    hard = quota["spec"]["hard"]
    keys = ("pods", "services", "persistentvolumeclaims", "requests.cpu", "requests.memory", "limits.cpu")
    assert tuple(hard[key] for key in (*keys, "limits.memory")) == expected


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_limit_range_matches_the_profile(renderer: BundleRenderer, class_name: str) -> None:
    limit_range = objects(render(renderer, class_name))["limitrange.yaml"]
    default, maximum = LIMITS[CLASSES[class_name][2]]
    assert limit_range["kind"] == "LimitRange"
    assert limit_range["metadata"]["name"] == "platform-defaults"
    assert limit_range["spec"] == {
        "limits": [{"type": "Container", "default": default, "defaultRequest": default, "max": maximum}]
    }
    expected = {
        "preview": ("500m", "512Mi", "2", "2Gi"),
        "shared-staging": ("1", "1Gi", "4", "8Gi"),
        "production": ("2", "2Gi", "8", "16Gi"),
    }[class_name]
    limit = limit_range["spec"]["limits"][0]
    assert (
        limit["default"]["cpu"],
        limit["default"]["memory"],
        limit["max"]["cpu"],
        limit["max"]["memory"],
    ) == (expected)


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_network_policy_denies_all_ingress(renderer: BundleRenderer, class_name: str) -> None:
    policy = objects(render(renderer, class_name))["networkpolicy.yaml"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "default-deny-ingress"
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_policy_pack_config_map(renderer: BundleRenderer, class_name: str) -> None:
    config_map = objects(render(renderer, class_name))["policypack.yaml"]
    _, _, profile, packs, cost, _ = CLASSES[class_name]
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"]["name"] == "platform-policy-pack"
    assert config_map["data"] == {
        "policy-packs": "\n".join(packs),
        "quota-profile": profile,
        "estimated-monthly-cost-usd": f"{cost:.2f}",
    }


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_argocd_application(renderer: BundleRenderer, class_name: str) -> None:
    bundle = render(renderer, class_name)
    application = objects(bundle)["argocd-application.yaml"]
    assert application["apiVersion"] == "argoproj.io/v1alpha1"
    assert application["kind"] == "Application"
    assert application["metadata"]["name"] == f"payments-payments-api-{REQUEST_ID}"
    assert application["metadata"]["namespace"] == "argocd"
    assert application["spec"] == {
        "project": f"payments-payments-api-{REQUEST_ID}",
        "sources": [
            {"repoURL": "https://github.com/example/payments-api.git", "targetRevision": "main", "path": "."},
        ],
        "destination": {"server": "https://kubernetes.default.svc", "namespace": bundle.namespace},
        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
    }
    assert structure_problems(application) == []


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_the_baseline_application_syncs_the_directory_in_the_platform_project(
    renderer: BundleRenderer, class_name: str
) -> None:
    bundle = render(renderer, class_name)
    baseline = objects(bundle)["argocd-baseline-application.yaml"]
    assert baseline["metadata"] == {
        "name": f"payments-payments-api-{REQUEST_ID}-baseline",
        "namespace": "argocd",
        "labels": platform_labels(class_name),
    }
    assert baseline["spec"] == {
        "project": "default",
        "sources": [
            {
                "repoURL": GITOPS_URL,
                "targetRevision": "main",
                "path": bundle.gitops_path,
                "directory": {"exclude": "argocd-*.yaml"},
            }
        ],
        "destination": {"server": "https://kubernetes.default.svc", "namespace": bundle.namespace},
        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
    }
    assert structure_problems(baseline) == []


def _permits(project: dict[str, Any], **target: Any) -> str | None:
    where = {
        "repo_url": "https://github.com/example/payments-api.git",
        "server": "https://kubernetes.default.svc",
        "namespace": "payments-payments-api-89abcdef",
        "group": "apps",
        "kind": "Deployment",
    }
    return project_denial(project, **{**where, **target})


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_the_environment_project_confines_the_app_to_its_repository_and_namespace(
    renderer: BundleRenderer, class_name: str
) -> None:
    parsed = objects(render(renderer, class_name))
    project = parsed["argocd-appproject.yaml"]
    assert project["apiVersion"] == "argoproj.io/v1alpha1"
    assert project["kind"] == "AppProject"
    assert project["metadata"]["name"] == parsed["argocd-application.yaml"]["spec"]["project"]
    assert project["metadata"]["namespace"] == "argocd"
    assert project["metadata"]["labels"] == platform_labels(class_name)
    assert structure_problems(project, APPPROJECT_SCHEMA) == []
    # What the app repository may do: its own kinds, in its own namespace, from itself.
    assert _permits(project) is None
    assert _permits(project, group="", kind="Secret") is None
    # A cluster-scoped kind: the whitelist is empty.
    assert project["spec"]["clusterResourceWhitelist"] == []
    denial = _permits(project, namespace=None, group="rbac.authorization.k8s.io", kind="ClusterRoleBinding")
    assert denial == "cluster-scoped ClusterRoleBinding is not in the project's clusterResourceWhitelist"
    assert _permits(project, namespace=None, group="", kind="Namespace") is not None
    # Another team's namespace, and another environment of the same team.
    assert "is not one of the project's destinations" in str(
        _permits(project, namespace="billing-api-01234567")
    )
    assert _permits(project, namespace="payments-payments-api-00000000") is not None
    assert _permits(project, server="https://other-cluster.example.com") is not None
    # A foreign repository.
    assert "is not one of the project's sourceRepos" in str(
        _permits(project, repo_url="https://github.com/attacker/cluster-admin.git")
    )
    # The platform's own objects in the namespace stay the platform's.
    for group, kind in [
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        # GitOps controllers' kinds would deploy more, under their own identity and projects.
        ("argoproj.io", "Application"),
        ("argoproj.io", "ApplicationSet"),
        ("argoproj.io", "AppProject"),
        ("kustomize.toolkit.fluxcd.io", "Kustomization"),
        ("helm.toolkit.fluxcd.io", "HelmRelease"),
    ]:
        assert (
            _permits(project, group=group, kind=kind)
            == f"{kind} is in the project's namespaceResourceBlacklist"
        )


def test_a_named_project_renders_no_appproject() -> None:
    renderer = build_renderer(
        load_settings(
            RendererSettings,
            {"PLATFORM_GITOPS_REPO_URL": GITOPS_URL, "PLATFORM_ARGOCD_PROJECT": "tenants-confined"},
        )
    )
    parsed = objects(render(renderer, "preview"))
    assert "argocd-appproject.yaml" not in parsed
    assert parsed["argocd-application.yaml"]["spec"]["project"] == "tenants-confined"


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"PLATFORM_ENV": "prod", "PLATFORM_ARGOCD_PROJECT": "default"}, "PLATFORM_ARGOCD_PROJECT=default"),
        ({"PLATFORM_STRICT_PRODUCTION": "true", "PLATFORM_ARGOCD_PROJECT": "default"}, "strict production"),
        ({"PLATFORM_ARGOCD_PROJECT": "{team}"}, "PLATFORM_ARGOCD_PROJECT must be {environment} or"),
        ({"PLATFORM_ARGOCD_PROJECT": "Tenants"}, "PLATFORM_ARGOCD_PROJECT must be {environment} or"),
        ({"PLATFORM_ARGOCD_BASELINE_PROJECT": "{environment}"}, "PLATFORM_ARGOCD_BASELINE_PROJECT must name"),
    ],
)
def test_project_settings_refuse_an_unconfined_or_malformed_project(
    environment: dict[str, str], message: str
) -> None:
    strict = {
        "PLATFORM_POSTGRES_DSN": "postgresql://db/x",
        "PLATFORM_ARGOCD_GITOPS_REPO_URL": "https://git.example.com/platform/gitops.git",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(RendererSettings, {**strict, **environment})
    assert message in str(caught.value)


def test_strict_production_starts_with_the_environment_projects() -> None:
    settings = load_settings(
        RendererSettings,
        {
            "PLATFORM_ENV": "prod",
            "PLATFORM_POSTGRES_DSN": "postgresql://db/x",
            "PLATFORM_ARGOCD_GITOPS_REPO_URL": "https://git.example.com/platform/gitops.git",
        },
    )
    assert settings.argocd_project == "{environment}"


def test_settings_shape_the_application_and_labels() -> None:
    renderer = build_renderer(
        load_settings(
            RendererSettings,
            {
                "PLATFORM_GITOPS_REPO_URL": "ssh://git@git.internal/platform/gitops.git",
                "PLATFORM_ARGOCD_GITOPS_REPO_URL": "https://git.internal/platform/gitops.git",
                "PLATFORM_GIT_BRANCH": "environments",
                "PLATFORM_ARGOCD_NAMESPACE": "gitops",
                "PLATFORM_ARGOCD_BASELINE_PROJECT": "platform",
                "PLATFORM_ARGOCD_DESTINATION_SERVER": "https://eks.us-east-1.example.com",
                "PLATFORM_LABEL_PREFIX": "idp.acme.io",
            },
        )
    )
    parsed = objects(render(renderer, "preview"))
    application = parsed["argocd-application.yaml"]
    baseline = parsed["argocd-baseline-application.yaml"]
    project = parsed["argocd-appproject.yaml"]
    assert application["metadata"]["namespace"] == "gitops"
    assert project["metadata"]["namespace"] == "gitops"
    assert baseline["spec"]["project"] == "platform"
    assert baseline["spec"]["sources"][0]["repoURL"] == "https://git.internal/platform/gitops.git"
    assert baseline["spec"]["sources"][0]["targetRevision"] == "environments"
    assert application["spec"]["destination"]["server"] == "https://eks.us-east-1.example.com"
    assert project["spec"]["destinations"][0]["server"] == "https://eks.us-east-1.example.com"
    assert parsed["resourcequota.yaml"]["metadata"]["labels"]["idp.acme.io/team"] == "payments"


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        (
            {"PLATFORM_GITOPS_REPO_URL": "https://x-access-token:s3cret@github.com/o/gitops.git"},
            "PLATFORM_GITOPS",
        ),
        (
            {"PLATFORM_ARGOCD_GITOPS_REPO_URL": "https://token@github.com/o/gitops.git"},
            "PLATFORM_ARGOCD_GITOPS",
        ),
        ({"PLATFORM_LABEL_PREFIX": "Not A Prefix"}, "PLATFORM_LABEL_PREFIX"),
        ({"PLATFORM_ARGOCD_NAMESPACE": "Argo_CD"}, "PLATFORM_ARGOCD_NAMESPACE"),
        ({"PLATFORM_ENV": "prod", "PLATFORM_POSTGRES_DSN": "postgresql://db/x"}, "PLATFORM_ARGOCD_GITOPS"),
    ],
)
def test_settings_refuse_credentials_and_malformed_values(environment: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(RendererSettings, environment)
    assert variable in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_publisher_token_is_fine_when_argocd_has_its_own_url() -> None:
    settings = load_settings(
        RendererSettings,
        {
            "PLATFORM_GITOPS_REPO_URL": "https://x-access-token:s3cret@github.com/o/gitops.git",
            "PLATFORM_ARGOCD_GITOPS_REPO_URL": "https://github.com/o/gitops.git",
        },
    )
    assert settings.argocd_source_repo_url == "https://github.com/o/gitops.git"


def test_unknown_kubernetes_schema_version_is_a_settings_error() -> None:
    settings = load_settings(RendererSettings, {"PLATFORM_KUBERNETES_SCHEMA_VERSION": "1.2.0"})
    with pytest.raises(SettingsError, match="PLATFORM_KUBERNETES_SCHEMA_VERSION"):
        build_renderer(settings)


def test_pack_manifests_become_extra_files_in_the_namespace(renderer: BundleRenderer) -> None:
    egress = PackManifest(
        pack="zero-trust-networking",
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        name="default-deny-egress",
        spec={
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}],
        },
    )
    retention = PackManifest(
        pack="audit-retention",
        api_version="v1",
        kind="ConfigMap",
        name="audit.retention",
        data={"days": "400"},
    )
    plan = seed_plan(
        "production", pack_manifests=[egress, retention], pack_metadata={"audit-retention-days": "400"}
    )
    bundle = renderer.render(REQUEST_ID, 3, seed_spec("production"), plan)
    names = [file.name for file in bundle.files]
    assert names == [
        *CORE_FILES,
        "pack-zero-trust-networking-networkpolicy-default-deny-egress.yaml",
        "pack-audit-retention-configmap-audit.retention.yaml",
    ]
    parsed = objects(bundle)
    assert parsed["pack-zero-trust-networking-networkpolicy-default-deny-egress.yaml"] == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "default-deny-egress",
            "namespace": bundle.namespace,
            "labels": platform_labels("production"),
        },
        "spec": egress.spec,
    }
    assert parsed["pack-audit-retention-configmap-audit.retention.yaml"] == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "audit.retention",
            "namespace": bundle.namespace,
            "labels": platform_labels("production"),
        },
        "data": {"days": "400"},
    }
    assert parsed["policypack.yaml"]["data"]["audit-retention-days"] == "400"


# -- golden files and determinism --------------------------------------------------------------------


# The files policy packs add to each seed class (SEED_PACK_FILES) on top of the six.
SEED_PACK_FILES = {
    "preview": [
        "pack-preview-networking-networkpolicy-allow-from-ingress-controller.yaml",
        "pack-cost-guardrails-resourcequota-cost-guardrails.yaml",
    ],
    "shared-staging": [
        "pack-shared-services-networkpolicy-allow-from-shared-services.yaml",
        "pack-cost-guardrails-resourcequota-cost-guardrails.yaml",
    ],
    "production": [
        "pack-zero-trust-networking-networkpolicy-default-deny-egress.yaml",
        "pack-zero-trust-networking-networkpolicy-allow-dns-egress.yaml",
    ],
}


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_golden_files(renderer: BundleRenderer, class_name: str) -> None:
    """The seed classes' bundles as the real pipeline produces them: the plan comes from the
    policy domain over the shipped catalog (quota profiles, packs), then the renderer."""
    bundle = renderer.render(REQUEST_ID, 1, seed_spec(class_name), catalog_plan(class_name))
    folder = GOLDEN / class_name
    if os.environ.get("PLATFORM_UPDATE_GOLDEN") == "1":
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.yaml"):
            stale.unlink()
        for file in bundle.files:
            (folder / file.name).write_bytes(file.content.encode())
    assert [file.name for file in bundle.files] == CORE_FILES + SEED_PACK_FILES[class_name]
    assert sorted(path.name for path in folder.glob("*.yaml")) == sorted(
        CORE_FILES + SEED_PACK_FILES[class_name]
    )
    for file in bundle.files:
        assert file.content.encode() == (folder / file.name).read_bytes(), file.name


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_golden_files_are_valid_kubernetes_with_the_spec_quota(class_name: str) -> None:
    """Read from disk, so the committed files themselves are what is checked."""
    folder = GOLDEN / class_name
    parsed = {}
    for path in sorted(folder.glob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert len(documents) == 1, path.name
        parsed[path.name] = documents[0]
        if path.name == "argocd-appproject.yaml":
            assert structure_problems(documents[0], APPPROJECT_SCHEMA) == []  # CRDs: no schema in
        elif path.name.startswith("argocd-"):  # kubernetes-validate
            assert structure_problems(documents[0]) == []
        else:
            assert kubernetes_validate.validate(documents[0], "1.30.0", strict=True), path.name
    assert parsed["resourcequota.yaml"]["spec"]["hard"] == QUOTAS[class_name]
    namespace_labels = parsed["namespace.yaml"]["metadata"]["labels"]
    assert namespace_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert parsed["policypack.yaml"]["data"]["policy-packs"].split("\n") == CLASSES[class_name][3]


def test_rendering_is_deterministic(renderer: BundleRenderer) -> None:
    first = render(renderer, "production", labels={"a": "1", "b": "2"})
    second = render(renderer, "production", labels={"b": "2", "a": "1"})
    assert first.files == second.files
    assert first.digest == second.digest
    assert render(renderer, "preview").digest != first.digest


def test_digest_is_sha256_of_the_sorted_name_content_pairs(renderer: BundleRenderer) -> None:
    bundle = render(renderer, "preview")
    pairs = sorted([file.name, file.content] for file in bundle.files)
    expected = hashlib.sha256(
        json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()
    assert bundle.digest == expected
    assert bundle_digest(tuple(reversed(bundle.files))) == expected


# -- names ------------------------------------------------------------------------------------------------


def test_long_team_and_app_truncate_the_namespace_but_keep_the_suffix(renderer: BundleRenderer) -> None:
    team, app = "t" * 40, "a" * 40
    name = namespace_name(team, app, REQUEST_ID)
    assert len(name) == 63
    assert name.endswith("-89abcdef")
    assert name.startswith(f"{team}-")
    bundle = renderer.render(REQUEST_ID, 1, seed_spec("preview", team=team, app=app), seed_plan("preview"))
    assert bundle.namespace == name
    assert objects(bundle)["argocd-application.yaml"]["metadata"]["name"] == f"{team}-{app}-{REQUEST_ID}"


def test_truncation_never_leaves_a_dash_before_the_suffix() -> None:
    # "<team>-<app>" cut at 54 characters would end in "-" here.
    team, app = "t" * 40, "a" * 13 + "-b"
    name = namespace_name(team, app, REQUEST_ID)
    assert "--" not in name
    assert name == f"{team}-{'a' * 13}-89abcdef"


# -- hostile values -----------------------------------------------------------------------------------------

HOSTILE = [
    '"\n  evil: true',
    "x\nevil: true",
    "{}",
    "[1, 2]",
    "&anchor",
    "*alias",
    "!!python/object/apply:os.system ['id']",
    "---\nkind: Secret",
    "...",
    "# comment",
    "key: value",
    "'single'",
    "\\",
    "\u2028evil: true",
    "null",
    "true",
    "010",
    "1e3",
    "\t\r\x00\x85\ufeff\U0001f600",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_owner_and_revision_stay_values(renderer: BundleRenderer, hostile: str) -> None:
    bundle = render(renderer, "preview", owner=hostile, revision=hostile)
    parsed = objects(bundle)
    assert parsed["namespace.yaml"]["metadata"]["annotations"] == {
        f"{PREFIX}/owner": hostile,
        "argocd.argoproj.io/sync-options": "Prune=false",
    }
    assert set(parsed["namespace.yaml"]["metadata"]) == {"name", "labels", "annotations"}
    application = parsed["argocd-application.yaml"]
    assert application["spec"]["sources"][0] == {
        "repoURL": "https://github.com/example/payments-api.git",
        "targetRevision": hostile,
        "path": ".",
    }
    assert set(application) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(application["spec"]) == {"project", "sources", "destination", "syncPolicy"}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_config_values_from_the_plan_stay_values(renderer: BundleRenderer, hostile: str) -> None:
    plan = seed_plan(
        "preview",
        pack_metadata={"note": hostile},
        pack_manifests=[
            PackManifest(
                pack="notes", api_version="v1", kind="ConfigMap", name="notes", data={"text": hostile}
            )
        ],
    )
    parsed = objects(renderer.render(REQUEST_ID, 1, seed_spec("preview"), plan))
    assert parsed["policypack.yaml"]["data"]["note"] == hostile
    assert parsed["pack-notes-configmap-notes.yaml"]["data"] == {"text": hostile}
    assert set(parsed["pack-notes-configmap-notes.yaml"]) == {"apiVersion", "kind", "metadata", "data"}


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_label_values_are_refused_or_stay_strings(renderer: BundleRenderer, hostile: str) -> None:
    """Labels must be label syntax (the renderer re-checks what the API validated); the few
    hostile values that are valid labels ("null", "true", "010") stay strings."""
    if label_value_problem(hostile) is not None:
        with pytest.raises(BundleInvalid, match="label 'pr'"):
            render(renderer, "preview", labels={"pr": hostile})
        return
    namespace = objects(render(renderer, "preview", labels={"pr": hostile}))["namespace.yaml"]
    assert namespace["metadata"]["labels"]["pr"] == hostile


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_serializer_keeps_hostile_labels_inside_their_values(hostile: str) -> None:
    """Below validation: even labels that were never checked cannot add keys or documents."""
    labels = {hostile: hostile, "team": hostile}
    annotations = {"owner": hostile}
    text = ManifestTemplates().render(
        "namespace.yaml.j2", {"name": hostile, "labels": labels, "annotations": annotations}
    )
    documents = list(yaml.safe_load_all(text))
    assert documents == [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": hostile, "labels": labels, "annotations": annotations},
        }
    ]


def test_a_template_cannot_print_a_raw_value() -> None:
    template = manifest_environment().from_string("name: {{ value }}\n")
    with pytest.raises(RawValueInTemplate):
        template.render(value="x\nevil: true")
    assert manifest_environment().from_string("name: {{ value | yaml }}\n").render(value="x") == 'name: "x"\n'


# -- failures ----------------------------------------------------------------------------------------------


def test_invalid_quota_quantity_is_a_clear_failure(renderer: BundleRenderer) -> None:
    plan = seed_plan("preview", resource_quota={**QUOTAS["preview"], "pods": "lots"})
    with pytest.raises(BundleInvalid) as caught:
        renderer.render(REQUEST_ID, 1, seed_spec("preview"), plan)
    assert caught.value.message == (
        "invalid bundle: resource quota pods: 'lots' is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"resource_quota": {}}, "the plan has no resource quota"),
        (
            {"resource_quota": {"pods": "-1"}},
            "resource quota pods: '-1' is negative; a resource amount cannot be",
        ),
        ({"resource_quota": {"bad key!": "1"}}, "'bad key!' is not a resource name"),
        (
            {
                "limit_range": LimitRangeValues(
                    default={"cpu": "4"}, default_request={"cpu": "1"}, max={"cpu": "2"}
                )
            },
            "limit range cpu: default 4 exceeds max 2",
        ),
        (
            {
                "limit_range": LimitRangeValues(
                    default={"memory": "1Gi"}, default_request={"memory": "2Gi"}, max={}
                )
            },
            "limit range memory: defaultRequest 2Gi exceeds default 1Gi",
        ),
        ({"class_name": "production"}, "the plan is for class 'production', the request for 'preview'"),
        (
            {"estimated_monthly_cost_usd": float("nan")},
            "estimated monthly cost must be a non-negative number",
        ),
        ({"pack_metadata": {"quota-profile": "x"}}, "pack metadata 'quota-profile': the key is reserved"),
        ({"quota_profile": "Not Valid!"}, "platform label 'platform.example.com/quota-profile'"),
        (
            {
                "pack_manifests": [
                    PackManifest(
                        pack="p", api_version="rbac.authorization.k8s.io/v1", kind="ClusterRole", name="x"
                    )
                ]
            },
            "kind 'ClusterRole' of 'rbac.authorization.k8s.io/v1' is not allowed",
        ),
        (
            {
                "pack_manifests": [
                    PackManifest(pack="p", api_version="v1", kind="ConfigMap", name="../../x", data={})
                ]
            },
            "name must be a DNS-1123 subdomain",
        ),
        (
            {
                "pack_manifests": [
                    PackManifest(pack="p", api_version="v1", kind="ResourceQuota", name="platform-defaults")
                ]
            },
            "ResourceQuota platform-defaults is in the bundle twice",
        ),
        (
            {
                "pack_manifests": [
                    PackManifest(
                        pack="p",
                        api_version="networking.k8s.io/v1",
                        kind="NetworkPolicy",
                        name="x",
                        spec={"podSelector": {}, "policyTypes": ["Sideways"], "evil": True},
                    )
                ]
            },
            "pack-p-networkpolicy-x.yaml is not a valid NetworkPolicy:"
            " spec: Additional properties are not allowed ('evil' was unexpected)",
        ),
    ],
)
def test_invalid_plans_fail_with_a_message_naming_the_problem(
    renderer: BundleRenderer, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(BundleInvalid) as caught:
        renderer.render(REQUEST_ID, 1, seed_spec("preview"), seed_plan("preview", **changes))
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"team": "../etc"}, "team must be a DNS-1123 label"),
        ({"app": "a/b"}, "app must be a DNS-1123 label"),
        ({"region": "US_EAST"}, "region must be a DNS-1123 label"),
        ({"region": ".."}, "region must be a DNS-1123 label"),
    ],
)
def test_unsafe_path_segments_fail(renderer: BundleRenderer, changes: dict[str, str], message: str) -> None:
    with pytest.raises(BundleInvalid, match="unsafe GitOps path") as caught:
        renderer.render(REQUEST_ID, 1, seed_spec("preview", **changes), seed_plan("preview"))
    assert message in caught.value.message


@pytest.mark.parametrize(
    "request_id", ["req-../../../x", "req-0123456789ABCDEF", "req-0123", "0123456789abcdef"]
)
def test_unsafe_request_ids_fail(renderer: BundleRenderer, request_id: str) -> None:
    with pytest.raises(BundleInvalid, match="request id must look like"):
        renderer.render(request_id, 1, seed_spec("preview"), seed_plan("preview"))


def test_a_repository_with_credentials_fails_without_echoing_them(renderer: BundleRenderer) -> None:
    with pytest.raises(BundleInvalid) as caught:
        render(renderer, "preview", repository="https://deploy:ghp_s3cret@github.com/example/app.git")
    assert "repository must not contain credentials" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_an_invalid_application_is_caught_by_the_structural_check() -> None:
    application = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "Bad_Name", "namespace": "argocd", "extra": 1},
        "spec": {
            "project": "",
            "sources": [],
            "destination": {"namespace": "ns"},
            "syncPolicy": {"automated": "yes"},
        },
    }
    assert structure_problems(application) == [
        "metadata.name: has an invalid format",
        "metadata.extra: unknown field",
        "spec.project: must not be empty",
        "spec.sources: must have at least 1 items",
        "spec.destination: server is required",
        "spec.syncPolicy.automated: must be of type object",
    ]


def test_an_invalid_appproject_is_caught_by_the_structural_check() -> None:
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "payments-api", "namespace": "argocd"},
        "spec": {
            "sourceRepos": [],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": "*"}],
            "namespaceResourceBlacklist": [{"kind": "Role"}],
            "roles": [],
        },
    }
    assert structure_problems(project, APPPROJECT_SCHEMA) == [
        "spec: clusterResourceWhitelist is required",
        "spec.sourceRepos: must have at least 1 items",
        "spec.destinations[0].namespace: has an invalid format",
        "spec.namespaceResourceBlacklist[0]: group is required",
        "spec.roles: unknown field",
    ]


# -- schema validation agrees with kubernetes-validate ------------------------------------------------------


@pytest.mark.parametrize("class_name", SEED_CLASSES)
def test_rendered_objects_pass_kubernetes_validate(renderer: BundleRenderer, class_name: str) -> None:
    for name, manifest in objects(render(renderer, class_name)).items():
        if name.startswith("argocd-"):
            continue  # CRDs: kubernetes-validate has no schema for them (structure_problems does)
        assert kubernetes_validate.validate(manifest, renderer.schemas.version, strict=True)
        assert renderer.schemas.problems(manifest) == []


def test_cached_validators_reject_what_kubernetes_validate_rejects(renderer: BundleRenderer) -> None:
    quota = objects(render(renderer, "preview"))["resourcequota.yaml"]
    broken = msgspec.json.decode(msgspec.json.encode(quota))
    broken["spec"]["hardd"] = broken["spec"].pop("hard")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, renderer.schemas.version, strict=True)
    assert renderer.schemas.problems(broken) == [
        "spec: Additional properties are not allowed ('hardd' was unexpected)"
    ]


def test_every_problem_is_reported_at_once_up_to_a_bound(renderer: BundleRenderer) -> None:
    plan = seed_plan("preview", resource_quota={"pods": "lots"}, estimated_monthly_cost_usd=-1.0)
    with pytest.raises(BundleInvalid) as caught:
        renderer.render(REQUEST_ID, 1, seed_spec("preview"), plan)
    assert "resource quota pods" in caught.value.message
    assert "estimated monthly cost must be a non-negative number" in caught.value.message

    many = {f"k{n}": f"bad value {n}" for n in range(25)}
    with pytest.raises(BundleInvalid) as caught:
        render(renderer, "preview", labels=many)
    assert caught.value.message.endswith("(and 15 more)")
