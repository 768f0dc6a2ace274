"""The objects an environment's bundle must contain (SPEC.md "Rendered GitOps layout").

:func:`desired_bundle` turns a request, its plan and the render options into one
:class:`Manifest` per file: the template that writes it, the values the template gets,
and the object the file must read back as. Building the intended object independently of
the template is what lets the renderer prove that the YAML it wrote is exactly that
object. Every input that ends up in a manifest is checked here first, and all problems
are reported together in one :class:`BundleInvalid`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from contracts.kubernetes_names import (
    DNS1123_SUBDOMAIN,
    is_dns1123_label,
    label_key_problem,
    label_value_problem,
)
from contracts.kubernetes_quantities import parse_quantity, quantity_problem, resource_name_problem
from contracts.models import PACK_KINDS, EnvironmentPlan, LimitRangeValues, PackManifest, RequestSpec
from services.renderer.domain.argocd import project_denial
from services.renderer.domain.bundle import invalid_bundle
from services.renderer.domain.git_urls import url_problem
from services.renderer.domain.layout import (
    application_name,
    file_name_problem,
    gitops_path,
    namespace_name,
)

PLATFORM_DEFAULTS = "platform-defaults"
DEFAULT_DENY_INGRESS = "default-deny-ingress"
POLICY_PACK_CONFIGMAP = "platform-policy-pack"
APPLICATION_FILE = "argocd-application.yaml"
APPPROJECT_FILE = "argocd-appproject.yaml"
BASELINE_APPLICATION_FILE = "argocd-baseline-application.yaml"
# The Argo CD objects of the directory: applied by whatever manages Applications (an
# app-of-apps in a platform project), never synced by the environment's own Applications.
ARGOCD_FILES = "argocd-*.yaml"
BASELINE_SUFFIX = "-baseline"
# PLATFORM_ARGOCD_PROJECT's value for "one AppProject per environment, rendered here".
ENVIRONMENT_PROJECT = "{environment}"

# Namespaced kinds that stay the platform's: the environment's guard rails (quota, limits,
# default-deny) and who may do what in it. An app repository that could write them would
# lift its own quota, open its network or grant itself rights. Cluster-scoped kinds
# (Namespace, ClusterRole, ClusterRoleBinding, ...) need no entry: the project's
# clusterResourceWhitelist is empty. Namespace is listed all the same, so a hand-widened
# whitelist still leaves the environment's own Namespace alone.
PLATFORM_CONTROLLED_KINDS: tuple[tuple[str, str], ...] = (
    ("", "Namespace"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    # GitOps controllers' own kinds: an Application, ApplicationSet or AppProject (Argo CD),
    # a Kustomization or HelmRelease (Flux) in the app repository would deploy more, under
    # that controller's identity and projects, not this one's.
    ("argoproj.io", "*"),
    ("*.fluxcd.io", "*"),
)

_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_ECHO = 64  # at most this many characters of an offending value go into an error message


class Validation(StrEnum):
    """Which schema a manifest is validated against after rendering."""

    KUBERNETES = "kubernetes"  # the Kubernetes OpenAPI schemas (kubernetes-validate)
    ARGOCD_APPLICATION = "argocd-application"  # services.renderer.domain.argocd
    ARGOCD_APPPROJECT = "argocd-appproject"  # services.renderer.domain.argocd


@dataclass(frozen=True)
class RenderOptions:
    """Installation-wide choices that shape every bundle (from the renderer's settings)."""

    gitops_repo_url: str
    label_prefix: str = "platform.example.com"
    gitops_revision: str = "main"
    argocd_namespace: str = "argocd"
    # ENVIRONMENT_PROJECT renders one confined AppProject per environment; any other value
    # names a project the operator manages, and no AppProject is rendered.
    argocd_project: str = ENVIRONMENT_PROJECT
    # The project of each environment's baseline Application (the platform's own objects).
    argocd_baseline_project: str = "default"
    destination_server: str = "https://kubernetes.default.svc"
    app_path: str = "."


@dataclass(frozen=True)
class Manifest:
    file_name: str
    template: str
    context: dict[str, Any]
    expected: dict[str, Any]
    validation: Validation = Validation.KUBERNETES


@dataclass(frozen=True)
class DesiredBundle:
    namespace: str
    gitops_path: str
    manifests: list[Manifest]


def _echo(value: str) -> str:
    return repr(value if len(value) <= _ECHO else value[:_ECHO] + "...")


def _label_problems(labels: dict[str, str], what: str) -> list[str]:
    problems = []
    for key, value in labels.items():
        key_problem = label_key_problem(key)
        if key_problem is not None:
            problems.append(f"{what} {_echo(key)}: {key_problem}")
        value_problem = label_value_problem(value)
        if value_problem is not None:
            problems.append(f"{what} {_echo(key)}: {value_problem}")
    return problems


def _quantity_problems(values: dict[str, str], what: str) -> list[str]:
    problems = []
    for name, quantity in values.items():
        name_problem = resource_name_problem(name)
        if name_problem is not None:
            problems.append(f"{what}: {name_problem}")
            continue
        amount_problem = quantity_problem(quantity)
        if amount_problem is not None:
            problems.append(f"{what} {name}: {amount_problem}")
    return problems


def _limit_range_problems(limits: LimitRangeValues) -> list[str]:
    problems = (
        _quantity_problems(limits.default, "limit range default")
        + _quantity_problems(limits.default_request, "limit range defaultRequest")
        + _quantity_problems(limits.max, "limit range max")
    )
    if problems:
        return problems
    # The API server rejects a LimitRange whose defaults exceed its maximum.
    ordered = (
        ("defaultRequest", limits.default_request, "default", limits.default),
        ("defaultRequest", limits.default_request, "max", limits.max),
        ("default", limits.default, "max", limits.max),
    )
    for low_name, low, high_name, high in ordered:
        for resource in sorted(low.keys() & high.keys()):
            if parse_quantity(low[resource]) > parse_quantity(high[resource]):
                problems.append(
                    f"limit range {resource}: {low_name} {low[resource]} exceeds {high_name} {high[resource]}"
                )
    return problems


def _cost_text(cost: float, problems: list[str]) -> str:
    if not math.isfinite(cost) or cost < 0:
        problems.append("estimated monthly cost must be a non-negative number")
        return "0.00"
    return f"{cost:.2f}"


def _metadata(
    name: str, namespace: str | None, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(labels)
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return metadata


def platform_labels(prefix: str, spec: RequestSpec, plan: EnvironmentPlan, request_id: str) -> dict[str, str]:
    """The labels every object of the bundle carries, so operators can select by any of them."""
    return {
        f"{prefix}/team": spec.team,
        f"{prefix}/app": spec.app,
        f"{prefix}/class": spec.class_name,
        f"{prefix}/quota-profile": plan.quota_profile,
        f"{prefix}/request-id": request_id,
    }


def _pack_manifest(
    pack_manifest: PackManifest, namespace: str, labels: dict[str, str], problems: list[str]
) -> Manifest | None:
    what = f"policy pack {_echo(pack_manifest.pack)} manifest {_echo(pack_manifest.name)}"
    found = len(problems)
    if (pack_manifest.api_version, pack_manifest.kind) not in PACK_KINDS:
        allowed = ", ".join(f"{kind} ({api})" for api, kind in sorted(PACK_KINDS))
        problems.append(
            f"{what}: kind {_echo(pack_manifest.kind)} of {_echo(pack_manifest.api_version)} "
            f"is not allowed (allowed: {allowed})"
        )
    if not is_dns1123_label(pack_manifest.pack):
        problems.append(f"{what}: pack name must be a DNS-1123 label")
    if len(pack_manifest.name) > 253 or DNS1123_SUBDOMAIN.fullmatch(pack_manifest.name) is None:
        problems.append(f"{what}: name must be a DNS-1123 subdomain")
    if len(problems) > found:
        return None
    file_name = f"pack-{pack_manifest.pack}-{pack_manifest.kind.lower()}-{pack_manifest.name}.yaml"
    name_problem = file_name_problem(file_name)
    if name_problem is not None:
        problems.append(f"{what}: {name_problem}")
        return None
    expected: dict[str, Any] = {
        "apiVersion": pack_manifest.api_version,
        "kind": pack_manifest.kind,
        "metadata": _metadata(pack_manifest.name, namespace, labels),
    }
    # An empty spec is left out: kinds without one (ConfigMap) reject even "spec: {}".
    spec = pack_manifest.spec or None
    if spec is not None:
        expected["spec"] = spec
    if pack_manifest.data is not None:
        problems += [
            f"{what}: data key {_echo(key)} must be letters, digits, '-', '_' or '.'"
            for key in pack_manifest.data
            if _CONFIGMAP_KEY.fullmatch(key) is None
        ]
        expected["data"] = dict(pack_manifest.data)
    context = {
        "api_version": pack_manifest.api_version,
        "kind": pack_manifest.kind,
        "name": pack_manifest.name,
        "namespace": namespace,
        "labels": labels,
        "spec": spec,
        "data": pack_manifest.data,
    }
    return Manifest(file_name, "pack-manifest.yaml.j2", context, expected)


def _object_identity(manifest: Manifest) -> tuple[str, str, str, str]:
    api_group = manifest.expected["apiVersion"].rpartition("/")[0]
    metadata = manifest.expected["metadata"]
    return (api_group, manifest.expected["kind"], metadata.get("namespace", ""), metadata["name"])


def _input_problems(
    spec: RequestSpec, plan: EnvironmentPlan, options: RenderOptions, labels: dict[str, str]
) -> list[str]:
    problems: list[str] = []
    if plan.class_name != spec.class_name:
        problems.append(
            f"the plan is for class {_echo(plan.class_name)}, the request for {_echo(spec.class_name)}"
        )
    problems += _label_problems(labels, "platform label")
    problems += _label_problems(spec.labels, "label")
    problems += [
        f"label {_echo(key)}: the {options.label_prefix}/ prefix is reserved for the platform"
        for key in spec.labels
        if key.startswith(options.label_prefix + "/")
    ]
    problems += _label_problems(plan.namespace_labels, "namespace label")
    problems += [
        f"label {_echo(key)}: the namespace label is set by the class's policy packs"
        for key in sorted(spec.labels.keys() & plan.namespace_labels.keys())
    ]
    problems += [
        f"namespace label {_echo(key)}: the {options.label_prefix}/ prefix is reserved for the platform"
        for key in plan.namespace_labels
        if key.startswith(options.label_prefix + "/")
    ]
    if not plan.resource_quota:
        problems.append("the plan has no resource quota")
    problems += _quantity_problems(plan.resource_quota, "resource quota")
    problems += _limit_range_problems(plan.limit_range)
    for what, url in (("repository", spec.repository), ("GitOps repository URL", options.gitops_repo_url)):
        problem = url_problem(url)
        if problem is not None:
            problems.append(f"{what} {problem}")
    return problems


def _policy_pack_data(plan: EnvironmentPlan, problems: list[str]) -> dict[str, str]:
    data = {
        "policy-packs": "\n".join(plan.policy_packs),
        "quota-profile": plan.quota_profile,
        "estimated-monthly-cost-usd": _cost_text(plan.estimated_monthly_cost_usd, problems),
    }
    for key, value in plan.pack_metadata.items():
        if key in data:
            problems.append(f"pack metadata {_echo(key)}: the key is reserved")
        elif _CONFIGMAP_KEY.fullmatch(key) is None:
            problems.append(f"pack metadata {_echo(key)}: keys must be letters, digits, '-', '_' or '.'")
        else:
            data[key] = value
    return data


ARGOCD_SYNC_OPTIONS = "argocd.argoproj.io/sync-options"


def _namespace_manifest(
    name: str, spec: RequestSpec, plan: EnvironmentPlan, labels: dict[str, str], label_prefix: str
) -> Manifest:
    # Policy packs' labels (e.g. Pod Security Admission) and the request's own never share a
    # key (checked above); the platform's labels are applied last.
    all_labels = {**spec.labels, **plan.namespace_labels, **labels}
    # Label values cannot hold an e-mail address; operators still want to know whom to ask.
    # Argo CD never prunes the namespace: an Application that stops listing it (an earlier
    # release's, which synced the baseline too, on its first sync after an upgrade) would
    # otherwise delete it with every workload in it. Teardown deletes it explicitly.
    annotations = {f"{label_prefix}/owner": spec.owner, ARGOCD_SYNC_OPTIONS: "Prune=false"}
    return Manifest(
        "namespace.yaml",
        "namespace.yaml.j2",
        {"name": name, "labels": all_labels, "annotations": annotations},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(name, None, all_labels, annotations)},
    )


def _resource_quota_manifest(namespace: str, labels: dict[str, str], hard: dict[str, str]) -> Manifest:
    return Manifest(
        "resourcequota.yaml",
        "resourcequota.yaml.j2",
        {"name": PLATFORM_DEFAULTS, "namespace": namespace, "labels": labels, "hard": hard},
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": _metadata(PLATFORM_DEFAULTS, namespace, labels),
            "spec": {"hard": dict(hard)},
        },
    )


def _limit_range_manifest(namespace: str, labels: dict[str, str], limits: LimitRangeValues) -> Manifest:
    limit = {
        "type": "Container",
        "default": dict(limits.default),
        "defaultRequest": dict(limits.default_request),
        "max": dict(limits.max),
    }
    return Manifest(
        "limitrange.yaml",
        "limitrange.yaml.j2",
        {
            "name": PLATFORM_DEFAULTS,
            "namespace": namespace,
            "labels": labels,
            "default": limits.default,
            "default_request": limits.default_request,
            "max": limits.max,
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": _metadata(PLATFORM_DEFAULTS, namespace, labels),
            "spec": {"limits": [limit]},
        },
    )


def _network_policy_manifest(namespace: str, labels: dict[str, str]) -> Manifest:
    return Manifest(
        "networkpolicy.yaml",
        "networkpolicy.yaml.j2",
        {"name": DEFAULT_DENY_INGRESS, "namespace": namespace, "labels": labels},
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(DEFAULT_DENY_INGRESS, namespace, labels),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
    )


def _policy_pack_manifest(namespace: str, labels: dict[str, str], data: dict[str, str]) -> Manifest:
    return Manifest(
        "policypack.yaml",
        "policypack.yaml.j2",
        {"name": POLICY_PACK_CONFIGMAP, "namespace": namespace, "labels": labels, "data": data},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(POLICY_PACK_CONFIGMAP, namespace, labels),
            "data": data,
        },
    )


def project_name(application: str, options: RenderOptions) -> str:
    """The Argo CD project of an environment: its own (named like its Application) or the configured one."""
    return application if options.argocd_project == ENVIRONMENT_PROJECT else options.argocd_project


def _appproject_manifest(
    *, name: str, namespace: str, labels: dict[str, str], spec: RequestSpec, options: RenderOptions
) -> Manifest:
    description = f"Environment {name}: deploys {spec.team}/{spec.app} into namespace {namespace} only"
    blacklist = [{"group": group, "kind": kind} for group, kind in PLATFORM_CONTROLLED_KINDS]
    project_spec = {
        "description": description,
        # The request's repository only: policy already held it to the class's packs (e.g.
        # allowed_repository_hosts); the project makes Argo CD hold the Application to it.
        "sourceRepos": [spec.repository],
        "destinations": [{"server": options.destination_server, "namespace": namespace}],
        "clusterResourceWhitelist": [],
        "namespaceResourceBlacklist": blacklist,
    }
    return Manifest(
        APPPROJECT_FILE,
        "argocd-appproject.yaml.j2",
        {
            "name": name,
            "namespace": options.argocd_namespace,
            "labels": labels,
            "description": description,
            "source_repos": project_spec["sourceRepos"],
            "destinations": project_spec["destinations"],
            "namespace_resource_blacklist": blacklist,
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": _metadata(name, options.argocd_namespace, labels),
            "spec": project_spec,
        },
        Validation.ARGOCD_APPPROJECT,
    )


def _baseline_application_manifest(
    *, name: str, path: str, namespace: str, labels: dict[str, str], options: RenderOptions
) -> Manifest:
    # The environment's own objects, from the GitOps repository, in a platform project: the
    # tenant's project refuses exactly these kinds, so they cannot share its Application.
    gitops_source = {
        "repoURL": options.gitops_repo_url,
        "targetRevision": options.gitops_revision,
        "path": path,
        "directory": {"exclude": ARGOCD_FILES},
    }
    return Manifest(
        BASELINE_APPLICATION_FILE,
        "argocd-baseline-application.yaml.j2",
        {
            "name": name,
            "namespace": options.argocd_namespace,
            "labels": labels,
            "project": options.argocd_baseline_project,
            "gitops_repo_url": options.gitops_repo_url,
            "gitops_revision": options.gitops_revision,
            "gitops_path": path,
            "excluded_files": ARGOCD_FILES,
            "destination_server": options.destination_server,
            "destination_namespace": namespace,
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": _metadata(name, options.argocd_namespace, labels),
            "spec": {
                "project": options.argocd_baseline_project,
                "sources": [gitops_source],
                "destination": {"server": options.destination_server, "namespace": namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        },
        Validation.ARGOCD_APPLICATION,
    )


def _application_manifest(
    *,
    name: str,
    project: str,
    namespace: str,
    labels: dict[str, str],
    spec: RequestSpec,
    options: RenderOptions,
) -> Manifest:
    # The app repository only: the environment's own objects (this directory) are the
    # baseline Application's, in a platform project; in the tenant's project Argo CD would
    # refuse them, which is the point of the project.
    app_source = {"repoURL": spec.repository, "targetRevision": spec.revision, "path": options.app_path}
    return Manifest(
        APPLICATION_FILE,
        "argocd-application.yaml.j2",
        {
            "name": name,
            "namespace": options.argocd_namespace,
            "labels": labels,
            "project": project,
            "app_repo_url": spec.repository,
            "app_revision": spec.revision,
            "app_path": options.app_path,
            "destination_server": options.destination_server,
            "destination_namespace": namespace,
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": _metadata(name, options.argocd_namespace, labels),
            "spec": {
                "project": project,
                "sources": [app_source],
                "destination": {"server": options.destination_server, "namespace": namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        },
        Validation.ARGOCD_APPLICATION,
    )


def _confinement_problems(project: Manifest, application: Manifest) -> list[str]:
    """The project must admit its Application's own source and destination and nothing wider.

    Checked on the objects the templates must reproduce, so a project that would lock its
    Application out (Argo CD: "not permitted in project") or one that lets the tenant reach
    the cluster or the platform's kinds never leaves the renderer.
    """
    spec = application.expected["spec"]
    server = spec["destination"]["server"]
    namespace = spec["destination"]["namespace"]
    repo = spec["sources"][0]["repoURL"]
    problems = []
    workload = project_denial(
        project.expected, repo_url=repo, server=server, namespace=namespace, group="apps", kind="Deployment"
    )
    if workload is not None:
        problems.append(f"{APPPROJECT_FILE}: the project refuses its own Application ({workload})")
    refusals = [
        (group, kind, namespace) for group, kind in PLATFORM_CONTROLLED_KINDS if kind != "Namespace"
    ] + [("", "Namespace", None), ("rbac.authorization.k8s.io", "ClusterRoleBinding", None)]
    for group, kind, where in refusals:
        if (
            project_denial(
                project.expected, repo_url=repo, server=server, namespace=where, group=group, kind=kind
            )
            is None
        ):
            problems.append(f"{APPPROJECT_FILE}: the project lets the app repository write {kind}")
    return problems


def _duplicate_problems(manifests: list[Manifest]) -> list[str]:
    problems = []
    seen_files: set[str] = set()
    seen_objects: set[tuple[str, str, str, str]] = set()
    for manifest in manifests:
        identity = _object_identity(manifest)
        if manifest.file_name in seen_files or identity in seen_objects:
            problems.append(f"{manifest.file_name}: {identity[1]} {identity[3]} is in the bundle twice")
        seen_files.add(manifest.file_name)
        seen_objects.add(identity)
    return problems


def desired_bundle(
    request_id: str, spec: RequestSpec, plan: EnvironmentPlan, options: RenderOptions
) -> DesiredBundle:
    """Every manifest of the request's bundle, or :class:`BundleInvalid` naming every problem."""
    # Path safety first: nothing below may run with a segment that could escape the directory.
    path = gitops_path(spec.region, spec.team, spec.app, request_id)
    namespace = namespace_name(spec.team, spec.app, request_id)
    app_name = application_name(spec.team, spec.app, request_id)
    labels = platform_labels(options.label_prefix, spec, plan, request_id)

    problems = _input_problems(spec, plan, options, labels)
    manifests = [
        _namespace_manifest(namespace, spec, plan, labels, options.label_prefix),
        _resource_quota_manifest(namespace, labels, plan.resource_quota),
        _limit_range_manifest(namespace, labels, plan.limit_range),
        _network_policy_manifest(namespace, labels),
        _policy_pack_manifest(namespace, labels, _policy_pack_data(plan, problems)),
        _baseline_application_manifest(
            name=app_name + BASELINE_SUFFIX, path=path, namespace=namespace, labels=labels, options=options
        ),
    ]
    project = project_name(app_name, options)
    if options.argocd_project == ENVIRONMENT_PROJECT:
        manifests.append(
            _appproject_manifest(name=project, namespace=namespace, labels=labels, spec=spec, options=options)
        )
    application = _application_manifest(
        name=app_name, project=project, namespace=namespace, labels=labels, spec=spec, options=options
    )
    if options.argocd_project == ENVIRONMENT_PROJECT:
        problems += _confinement_problems(manifests[-1], application)
    manifests.append(application)
    for pack_manifest in plan.pack_manifests:
        manifest = _pack_manifest(pack_manifest, namespace, labels, problems)
        if manifest is not None:
            manifests.append(manifest)
    problems += _duplicate_problems(manifests)
    if problems:
        raise invalid_bundle("invalid bundle", problems)
    return DesiredBundle(namespace=namespace, gitops_path=path, manifests=manifests)
