"""What an environment's bundle asks the cluster to hold, and in which order (pure, no I/O).

A published bundle is a set of rendered YAML files. :func:`plan_bundle` turns them into
:class:`DesiredObject` values, refuses anything that would reach outside the environment
(another namespace, cluster-scoped objects other than the environment's own Namespace) and
sorts them into apply order.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from contracts.events import RenderedFile
from libs.errors import ValidationFailed

ARGOCD_GROUP = "argoproj.io"
ARGOCD_NAMESPACE = "argocd"

# Apply order. The Namespace comes first because every namespaced object is refused
# (404) until it exists. Quota and LimitRange come before anything that could start pods,
# since both are enforced only at admission: pods admitted earlier escape them. Network
# policies come before workloads so nothing runs even briefly without default-deny. The
# Argo CD Applications are last: they start deploying the app, which must land in a
# namespace whose guard rails are already in place; the environment's AppProject comes
# just before them, since Argo CD refuses an Application whose project does not exist.
_APPLY_RANK = {
    "Namespace": 0,
    "ResourceQuota": 10,
    "LimitRange": 11,
    "ServiceAccount": 20,
    "Role": 21,
    "RoleBinding": 22,
    "NetworkPolicy": 30,
    "ConfigMap": 40,
}
_OTHER_NAMESPACED_RANK = 50
_APPPROJECT_RANK = 99
_APPLICATION_RANK = 100
# Argo CD's kinds a bundle may carry, each in Argo CD's own namespace, not the environment's.
_ARGOCD_RANKS = {"AppProject": _APPPROJECT_RANK, "Application": _APPLICATION_RANK}

# Cluster-scoped kinds a bundle could plausibly carry. None of them is the environment's
# to own: one environment must not change what every other tenant of the cluster sees.
_CLUSTER_SCOPED_KINDS = frozenset(
    {
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
        "Node",
    }
)

# Build-tool files that may sit next to manifests in a GitOps directory but are not objects.
_NOT_CLUSTER_OBJECTS = ("kustomize.config.k8s.io/",)


class InvalidBundle(ValidationFailed):
    """The bundle cannot be applied as it is; retrying will not help."""


@dataclass(frozen=True, order=True)
class ObjectRef:
    """Identity of one object in the cluster. ``namespace`` is None for cluster-scoped objects."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class DesiredObject:
    """One object as the bundle wants it, with what the service needs to apply it."""

    ref: ObjectRef
    manifest: dict[str, Any] = field(compare=False)
    # Skipped with a note, instead of failing the bundle, when the cluster does not serve the kind.
    optional: bool = False
    rank: int = _OTHER_NAMESPACED_RANK

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of the manifest: equal manifests, equal digests."""
        canonical = json.dumps(self.manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def is_argocd_object(api_version: str, kind: str) -> bool:
    """An Argo CD Application or AppProject (both live in Argo CD's namespace)."""
    return kind in _ARGOCD_RANKS and api_version.startswith(ARGOCD_GROUP + "/")


def _documents(file: RenderedFile) -> Iterable[dict[str, Any]]:
    try:
        documents = list(yaml.safe_load_all(file.content))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InvalidBundle(f"{file.name} is not valid YAML{where}") from None
    for document in documents:
        if document is None:
            continue  # an empty document between two '---' separators
        if not isinstance(document, dict):
            raise InvalidBundle(f"{file.name}: every YAML document must be a Kubernetes object")
        if document.get("kind") == "List" and isinstance(document.get("items"), list):
            for item in document["items"]:
                if not isinstance(item, dict):
                    raise InvalidBundle(f"{file.name}: every item of a List must be a Kubernetes object")
                yield item
        else:
            yield document


def _desired(document: dict[str, Any], file_name: str, namespace: str) -> DesiredObject | None:
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    metadata = document.get("metadata")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise InvalidBundle(f"{file_name}: an object without apiVersion or kind")
    if api_version.startswith(_NOT_CLUSTER_OBJECTS):
        return None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidBundle(f"{file_name}: {kind} without metadata.name")
    assert isinstance(metadata, dict)  # for type checkers: name was read from it
    manifest = copy.deepcopy(document)
    declared_namespace = metadata.get("namespace")

    if kind == "Namespace" and api_version == "v1":
        if name != namespace:
            raise InvalidBundle(
                f"{file_name}: Namespace {name} is not the environment's namespace {namespace}"
            )
        manifest["metadata"].pop("namespace", None)
        return DesiredObject(ObjectRef(api_version, kind, name), manifest, rank=_APPLY_RANK["Namespace"])
    if kind in _CLUSTER_SCOPED_KINDS:
        raise InvalidBundle(
            f"{file_name}: cluster-scoped {kind} {name} is outside what an environment may own"
        )
    if is_argocd_object(api_version, kind):
        # Argo CD watches Applications and AppProjects in its own namespace only; that is the
        # one exception to "everything lives in the environment's namespace".
        target = declared_namespace or ARGOCD_NAMESPACE
        manifest["metadata"]["namespace"] = target
        return DesiredObject(ObjectRef(api_version, kind, name, target), manifest, True, _ARGOCD_RANKS[kind])
    if declared_namespace not in (None, namespace):
        raise InvalidBundle(
            f"{file_name}: {kind} {name} targets namespace {declared_namespace}, not {namespace}"
        )
    manifest["metadata"]["namespace"] = namespace
    rank = _APPLY_RANK.get(kind, _OTHER_NAMESPACED_RANK)
    return DesiredObject(ObjectRef(api_version, kind, name, namespace), manifest, rank=rank)


def plan_bundle(files: Sequence[RenderedFile], namespace: str) -> list[DesiredObject]:
    """The bundle's objects in apply order (see ``_APPLY_RANK``); raises :class:`InvalidBundle`."""
    objects: list[DesiredObject] = []
    for file in files:
        if not file.name.endswith((".yaml", ".yml")):
            continue
        for document in _documents(file):
            desired = _desired(document, file.name, namespace)
            if desired is not None:
                objects.append(desired)
    if not objects:
        raise InvalidBundle("the published bundle holds no Kubernetes objects")
    seen: set[tuple[str, str, str | None, str]] = set()
    for obj in objects:
        identity = (obj.ref.group, obj.ref.kind, obj.ref.namespace, obj.ref.name)
        if identity in seen:
            raise InvalidBundle(f"{obj.ref.describe()} appears twice in the bundle")
        seen.add(identity)
    if not any(obj.ref.kind == "Namespace" for obj in objects):
        # Teardown deletes the namespace; only a namespace the bundle created may be deleted.
        raise InvalidBundle(f"the bundle does not declare its Namespace {namespace}")
    return apply_order(objects)


def apply_order(objects: Iterable[DesiredObject]) -> list[DesiredObject]:
    """Objects sorted by rank; ties keep the bundle's order (a stable sort)."""
    return sorted(objects, key=lambda obj: obj.rank)


def teardown_order(objects: Iterable[DesiredObject], namespace: str) -> list[ObjectRef]:
    """What teardown deletes: objects outside the namespace first, then the namespace itself.

    Deleting the namespace removes everything inside it; objects elsewhere (the Argo CD
    Applications and AppProject) would otherwise outlive the environment and keep syncing a
    removed path. They go in reverse apply order (Applications before their project), so no
    Application is left pointing at a project that no longer exists.
    ``objects`` may hold several generations' objects (the same one twice is deleted once),
    including a Namespace of another name that an earlier generation created.
    """
    the_namespace = ObjectRef("v1", "Namespace", namespace)
    outside: dict[ObjectRef, int] = {}
    for obj in objects:
        if obj.ref.namespace != namespace and (obj.ref.kind, obj.ref.name) != ("Namespace", namespace):
            outside[obj.ref] = max(obj.rank, outside.get(obj.ref, obj.rank))
    return [*sorted(outside, key=lambda ref: (-outside[ref], ref)), the_namespace]


def pruned_by(previous: Iterable[DesiredObject], current: Iterable[DesiredObject]) -> list[ObjectRef]:
    """Objects an earlier generation applied that the new bundle no longer has.

    Server-side apply only adds and updates; without this a policy dropped from a pack
    would stay in the cluster forever. The Namespace is never pruned here (teardown's job).
    """
    keep = {(obj.ref.group, obj.ref.kind, obj.ref.namespace, obj.ref.name) for obj in current}
    return [
        obj.ref
        for obj in previous
        if obj.ref.kind != "Namespace"
        and (obj.ref.group, obj.ref.kind, obj.ref.namespace, obj.ref.name) not in keep
    ]
