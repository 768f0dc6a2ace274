"""Properties of rendering for arbitrary valid names and arbitrary text values.

Whatever the names, labels and free-text fields, each rendered file is one YAML document
that reads back as exactly the intended object (no extra keys, objects or documents),
and every file path stays inside the request's directory.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pydantic
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from contracts.inputs import EnvironmentRequestInput
from contracts.kubernetes_names import is_dns1123_label, label_key_problem, label_value_problem
from contracts.models import PackManifest
from libs.errors import ValidationFailed
from libs.settings import load_settings
from services.intake.domain.model import request_id_for
from services.intake.domain.validation import request_spec
from services.policy.adapters.catalog_files import seed_classes
from services.renderer.bootstrap import build_renderer
from services.renderer.domain.bundle import same_structure
from services.renderer.domain.yaml_values import block, flow
from services.renderer.settings import RendererSettings
from tests.support.rendered_bundles import CORE_FILES
from tests.support.seed_plans import catalog_plan, seed_plan, seed_spec

PREFIX = "platform.example.com"
# Built once: hypothesis runs the test body many times and function fixtures would reset.
RENDERER = build_renderer(
    load_settings(RendererSettings, {"PLATFORM_GITOPS_REPO_URL": "https://git.example.com/g.git"})
)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
regions = st.from_regex(r"[a-z]{2}-[a-z]{2,9}-[0-9]", fullmatch=True) | dns_labels
request_ids = st.from_regex(r"req-[0-9a-f]{16}", fullmatch=True)
label_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
label_prefixes = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True)
label_keys = (
    st.one_of(label_names, st.builds(lambda prefix, name: f"{prefix}/{name}", label_prefixes, label_names))
    .filter(lambda key: label_key_problem(key) is None)
    .filter(lambda key: not key.startswith(f"{PREFIX}/"))
)
label_values = st.one_of(st.just(""), label_names).filter(lambda value: label_value_problem(value) is None)
free_text = st.text(min_size=1, max_size=40).filter(lambda text: text.strip() != "")


def parse_single(text: str) -> Any:
    documents = list(yaml.safe_load_all(text))
    assert len(documents) == 1
    return documents[0]


@PROPERTY_SETTINGS
@given(
    team=dns_labels,
    app=dns_labels,
    region=regions,
    request_id=request_ids,
    labels=st.dictionaries(label_keys, label_values, max_size=5),
    owner=free_text,
    revision=free_text,
    note=st.text(max_size=40),
)
def test_rendered_files_are_exactly_the_intended_objects(
    team: str,
    app: str,
    region: str,
    request_id: str,
    labels: dict[str, str],
    owner: str,
    revision: str,
    note: str,
) -> None:
    spec = seed_spec(
        "preview", team=team, app=app, region=region, labels=labels, owner=owner, revision=revision
    )
    plan = seed_plan(
        "preview",
        pack_metadata={"note": note},
        pack_manifests=[
            PackManifest(pack="notes", api_version="v1", kind="ConfigMap", name=app, data={"n": note})
        ],
    )
    bundle = RENDERER.render(request_id, 1, spec, plan)

    directory = f"clusters/{region}/teams/{team}/{app}/{request_id}"
    assert bundle.gitops_path == directory
    assert posixpath.normpath(directory) == directory
    for file in bundle.files:
        assert posixpath.normpath(posixpath.join(directory, file.name)).startswith(directory + "/")
        assert "/" not in file.name

    assert is_dns1123_label(bundle.namespace)
    assert bundle.namespace.endswith("-" + request_id[-8:])
    platform = {
        f"{PREFIX}/team": team,
        f"{PREFIX}/app": app,
        f"{PREFIX}/class": "preview",
        f"{PREFIX}/quota-profile": "small",
        f"{PREFIX}/request-id": request_id,
    }
    parsed = {file.name: parse_single(file.content) for file in bundle.files}
    assert list(parsed) == [*CORE_FILES, f"pack-notes-configmap-{app}.yaml"]
    assert parsed["namespace.yaml"] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": bundle.namespace,
            "labels": {**labels, **platform},
            "annotations": {f"{PREFIX}/owner": owner, "argocd.argoproj.io/sync-options": "Prune=false"},
        },
    }
    for name in ("resourcequota.yaml", "limitrange.yaml", "networkpolicy.yaml", "policypack.yaml"):
        assert set(parsed[name]) == {
            "apiVersion",
            "kind",
            "metadata",
            "data" if name == "policypack.yaml" else "spec",
        }
        assert parsed[name]["metadata"] == {
            "name": parsed[name]["metadata"]["name"],
            "namespace": bundle.namespace,
            "labels": platform,
        }
    assert parsed["policypack.yaml"]["data"]["note"] == note
    assert parsed[f"pack-notes-configmap-{app}.yaml"] == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": app, "namespace": bundle.namespace, "labels": platform},
        "data": {"n": note},
    }
    application = parsed["argocd-application.yaml"]
    assert application["metadata"] == {
        "name": f"{team}-{app}-{request_id}",
        "namespace": "argocd",
        "labels": platform,
    }
    assert parsed["argocd-baseline-application.yaml"]["spec"]["sources"][0]["path"] == directory
    assert application["spec"]["project"] == parsed["argocd-appproject.yaml"]["metadata"]["name"]
    assert application["spec"]["sources"] == [
        {
            "repoURL": "https://github.com/example/payments-api.git",
            "targetRevision": revision,
            "path": ".",
        }
    ]
    assert application["spec"]["destination"]["namespace"] == bundle.namespace
    project = parsed["argocd-appproject.yaml"]["spec"]
    assert project["destinations"] == [
        {"server": "https://kubernetes.default.svc", "namespace": bundle.namespace}
    ]
    assert project["clusterResourceWhitelist"] == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(value=json_values)
def test_the_serializer_reads_back_exactly(value: Any) -> None:
    assert same_structure(yaml.safe_load(flow(value)), value)
    assert same_structure(yaml.safe_load("key:" + block(value, 2) + "\n"), {"key": value})
    assert (flow(value) + block(value, 2)).isascii()


# -- whatever passes the API renders to exactly the intended objects ----------------------------------

SEED_CLASSES = {environment_class.name: environment_class for environment_class in seed_classes()}
git_hosts = st.sampled_from(["github.com", "gitlab.com", "bitbucket.org"])
path_parts = st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True).filter(
    lambda part: part not in {".", ".."}
)
repositories = st.one_of(
    st.builds(lambda host, org, repo: f"https://{host}/{org}/{repo}.git", git_hosts, path_parts, path_parts),
    st.builds(lambda host, org, repo: f"git@{host}:{org}/{repo}.git", git_hosts, path_parts, path_parts),
    st.builds(lambda host, org, repo: f"ssh://git@{host}/{org}/{repo}", git_hosts, path_parts, path_parts),
)


@st.composite
def request_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """JSON bodies of POST /v1/environment-requests, aimed at (not limited to) valid ones."""
    class_name = draw(st.sampled_from(sorted(SEED_CLASSES)))
    environment_class = SEED_CLASSES[class_name]
    body: dict[str, Any] = {
        "app": draw(dns_labels),
        "team": draw(dns_labels),
        "class": class_name,
        "region": draw(st.sampled_from(environment_class.allowed_regions)),
        "ttl_hours": draw(st.integers(1, environment_class.max_ttl_hours)),
        "owner": draw(st.from_regex(r"[A-Za-z0-9@._+ '-]{1,60}", fullmatch=True)),
        "repository": draw(repositories),
        "labels": draw(st.dictionaries(label_keys, label_values, max_size=6)),
    }
    if draw(st.booleans()):
        body["revision"] = draw(st.from_regex(r"[A-Za-z0-9._/-]{1,40}", fullmatch=True))
    return body


def expected_pack_object(manifest: PackManifest, namespace: str, platform: dict[str, str]) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "apiVersion": manifest.api_version,
        "kind": manifest.kind,
        "metadata": {"name": manifest.name, "namespace": namespace, "labels": platform},
    }
    if manifest.spec:
        expected["spec"] = manifest.spec
    if manifest.data is not None:
        expected["data"] = manifest.data
    return expected


@PROPERTY_SETTINGS
@given(body=request_bodies(), actor=st.text(min_size=1, max_size=30), idempotency_key=st.text(max_size=40))
def test_any_request_the_api_accepts_renders_exactly_the_intended_objects(
    body: dict[str, Any], actor: str, idempotency_key: str
) -> None:
    """Generated bodies go through intake's own validation (only what the API accepts goes
    on), get their plan from the policy domain over the seed catalog, and their id from
    intake's derivation; then every file must read back as exactly the object intended."""
    try:
        spec = request_spec(EnvironmentRequestInput.model_validate(body), SEED_CLASSES)
    except (pydantic.ValidationError, ValidationFailed):
        assume(False)
        return
    request_id = request_id_for(actor, idempotency_key or None, b"installation key")
    plan = catalog_plan(spec.class_name, spec)
    bundle = RENDERER.render(request_id, 1, spec, plan)

    directory = f"clusters/{spec.region}/teams/{spec.team}/{spec.app}/{request_id}"
    assert bundle.gitops_path == directory
    for file in bundle.files:
        assert "/" not in file.name
        assert posixpath.normpath(posixpath.join(directory, file.name)) == f"{directory}/{file.name}"

    platform = {
        f"{PREFIX}/team": spec.team,
        f"{PREFIX}/app": spec.app,
        f"{PREFIX}/class": spec.class_name,
        f"{PREFIX}/quota-profile": plan.quota_profile,
        f"{PREFIX}/request-id": request_id,
    }
    namespace = bundle.namespace

    def scoped(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": platform}

    pack_files = {
        f"pack-{m.pack}-{m.kind.lower()}-{m.name}.yaml": expected_pack_object(m, namespace, platform)
        for m in plan.pack_manifests
    }
    expected: dict[str, Any] = {
        "namespace.yaml": {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {**spec.labels, **plan.namespace_labels, **platform},
                "annotations": {
                    f"{PREFIX}/owner": spec.owner,
                    "argocd.argoproj.io/sync-options": "Prune=false",
                },
            },
        },
        "resourcequota.yaml": {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": scoped("platform-defaults"),
            "spec": {"hard": plan.resource_quota},
        },
        "limitrange.yaml": {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": scoped("platform-defaults"),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": plan.limit_range.default,
                        "defaultRequest": plan.limit_range.default_request,
                        "max": plan.limit_range.max,
                    }
                ]
            },
        },
        "networkpolicy.yaml": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": scoped("default-deny-ingress"),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        "policypack.yaml": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": scoped("platform-policy-pack"),
            "data": {
                "policy-packs": "\n".join(plan.policy_packs),
                "quota-profile": plan.quota_profile,
                "estimated-monthly-cost-usd": f"{plan.estimated_monthly_cost_usd:.2f}",
                **plan.pack_metadata,
            },
        },
        "argocd-baseline-application.yaml": {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": f"{spec.team}-{spec.app}-{request_id}-baseline",
                "namespace": "argocd",
                "labels": platform,
            },
            "spec": {
                "project": "default",
                "sources": [
                    {
                        "repoURL": "https://git.example.com/g.git",
                        "targetRevision": "main",
                        "path": directory,
                        "directory": {"exclude": "argocd-*.yaml"},
                    },
                ],
                "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        },
        "argocd-appproject.yaml": {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {
                "name": f"{spec.team}-{spec.app}-{request_id}",
                "namespace": "argocd",
                "labels": platform,
            },
            "spec": {
                "description": f"Environment {spec.team}-{spec.app}-{request_id}: deploys"
                f" {spec.team}/{spec.app} into namespace {namespace} only",
                "sourceRepos": [spec.repository],
                "destinations": [{"server": "https://kubernetes.default.svc", "namespace": namespace}],
                "clusterResourceWhitelist": [],
                "namespaceResourceBlacklist": [
                    {"group": "", "kind": "Namespace"},
                    {"group": "", "kind": "ResourceQuota"},
                    {"group": "", "kind": "LimitRange"},
                    {"group": "networking.k8s.io", "kind": "NetworkPolicy"},
                    {"group": "rbac.authorization.k8s.io", "kind": "Role"},
                    {"group": "rbac.authorization.k8s.io", "kind": "RoleBinding"},
                    {"group": "argoproj.io", "kind": "*"},
                    {"group": "*.fluxcd.io", "kind": "*"},
                ],
            },
        },
        "argocd-application.yaml": {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {
                "name": f"{spec.team}-{spec.app}-{request_id}",
                "namespace": "argocd",
                "labels": platform,
            },
            "spec": {
                "project": f"{spec.team}-{spec.app}-{request_id}",
                "sources": [{"repoURL": spec.repository, "targetRevision": spec.revision, "path": "."}],
                "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        },
        **pack_files,
    }
    parsed = {file.name: parse_single(file.content) for file in bundle.files}
    assert list(parsed) == list(expected)
    for name, document in parsed.items():
        assert same_structure(document, expected[name]), name
