"""Structural checks of the Argo CD objects, which have no schema in kubernetes-validate,
and the confinement an AppProject grants, as Argo CD evaluates it.

:data:`APPLICATION_SCHEMA` and :data:`APPPROJECT_SCHEMA` are small JSON-Schema-like
descriptions of the subset of ``argoproj.io/v1alpha1`` Application and AppProject the
renderer writes: required fields, types, and no unknown keys, so a mistake in the template or
the object builder fails here instead of in Argo CD. They are written by hand after Argo CD's
CRDs (field names and types as in ``appprojects.argoproj.io`` / ``applications.argoproj.io``
v1alpha1), because no package from PyPI or npm ships those CRDs' schemas.
:func:`structure_problems` understands only the keywords used below.

:func:`project_denial` answers what Argo CD answers when an Application of a project syncs
an object: whether the project lets that repository, destination and kind through. The
renderer uses it to prove that each environment's project admits its own Application and
nothing beyond its own namespace.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from contracts.kubernetes_names import DNS1123_LABEL, DNS1123_SUBDOMAIN

Schema = Mapping[str, Any]

_STRING = {"type": "string", "minLength": 1}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}

APPLICATION_SCHEMA: Schema = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"type": "string", "enum": ["argoproj.io/v1alpha1"]},
        "kind": {"type": "string", "enum": ["Application"]},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN.pattern},
                "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL.pattern},
                "labels": _LABELS,
                "annotations": _LABELS,
                "finalizers": {"type": "array", "items": _STRING},
            },
        },
        "spec": {
            "type": "object",
            "required": ["project", "sources", "destination"],
            "additionalProperties": False,
            "properties": {
                "project": _STRING,
                "sources": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["repoURL", "targetRevision", "path"],
                        "additionalProperties": False,
                        "properties": {
                            "repoURL": _STRING,
                            "targetRevision": _STRING,
                            "path": _STRING,
                            "directory": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "exclude": {"type": "string"},
                                    "include": {"type": "string"},
                                    "recurse": {"type": "boolean"},
                                },
                            },
                        },
                    },
                },
                "destination": {
                    "type": "object",
                    "required": ["server", "namespace"],
                    "additionalProperties": False,
                    "properties": {
                        "server": _STRING,
                        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL.pattern},
                    },
                },
                "syncPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "automated": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "prune": {"type": "boolean"},
                                "selfHeal": {"type": "boolean"},
                                "allowEmpty": {"type": "boolean"},
                            },
                        },
                        "syncOptions": {"type": "array", "items": _STRING},
                    },
                },
            },
        },
    },
}

_GROUP_KIND = {
    "type": "object",
    "required": ["group", "kind"],
    "additionalProperties": False,
    "properties": {"group": {"type": "string"}, "kind": _STRING},
}

APPPROJECT_SCHEMA: Schema = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"type": "string", "enum": ["argoproj.io/v1alpha1"]},
        "kind": {"type": "string", "enum": ["AppProject"]},
        "metadata": APPLICATION_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            # All four are required here although Argo CD defaults them: a project without
            # its lists would allow more (or less) than the platform means to grant.
            "required": [
                "sourceRepos",
                "destinations",
                "clusterResourceWhitelist",
                "namespaceResourceBlacklist",
            ],
            "additionalProperties": False,
            "properties": {
                "description": {"type": "string"},
                "sourceRepos": {"type": "array", "minItems": 1, "items": _STRING},
                "destinations": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["server", "namespace"],
                        "additionalProperties": False,
                        "properties": {
                            "server": _STRING,
                            "namespace": {
                                "type": "string",
                                "maxLength": 63,
                                "pattern": DNS1123_LABEL.pattern,
                            },
                        },
                    },
                },
                "clusterResourceWhitelist": {"type": "array", "items": _GROUP_KIND},
                "namespaceResourceBlacklist": {"type": "array", "items": _GROUP_KIND},
            },
        },
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
}


def structure_problems(value: Any, schema: Schema = APPLICATION_SCHEMA, path: str = "") -> list[str]:
    """Every way ``value`` departs from ``schema``, as ``"<path>: <problem>"`` strings."""
    where = path or "(root)"
    expected = schema["type"]
    if not isinstance(value, _TYPES[expected]):
        return [f"{where}: must be of type {expected}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{where}: must not be empty")
        if len(value) > schema.get("maxLength", len(value)):
            problems.append(f"{where}: must be at most {schema['maxLength']} characters")
        if "pattern" in schema and re.fullmatch(schema["pattern"], value) is None:
            problems.append(f"{where}: has an invalid format")
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{where}: must have at least {schema['minItems']} items")
        for index, item in enumerate(value):
            problems += structure_problems(item, schema["items"], f"{path}[{index}]")
    elif isinstance(value, dict):
        properties: Mapping[str, Schema] = schema.get("properties", {})
        required = schema.get("required", [])
        problems += [f"{where}: {name} is required" for name in required if name not in value]
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key in properties:
                problems += structure_problems(item, properties[key], child)
            elif extra is False:
                problems.append(f"{child}: unknown field")
            elif isinstance(extra, Mapping):
                problems += structure_problems(item, extra, child)
    return problems


def _glob(pattern: str, value: str) -> bool:
    # Argo CD matches project lists with globs ("*" also crosses "/"); the renderer writes
    # exact values, so a pattern here only ever comes from an operator's hand-edited project.
    return fnmatch.fnmatchcase(value, pattern)


def _listed(entries: list[dict[str, str]], group: str, kind: str) -> bool:
    return any(_glob(entry["group"], group) and _glob(entry["kind"], kind) for entry in entries)


def project_denial(
    project: Mapping[str, Any], *, repo_url: str, server: str, namespace: str | None, group: str, kind: str
) -> str | None:
    """Why Argo CD would refuse to sync ``group``/``kind`` from ``repo_url`` to ``namespace``
    under ``project`` (an AppProject as a mapping), or None when the project permits it.

    ``namespace`` None means a cluster-scoped kind. The rules are Argo CD's: the repository
    must match ``sourceRepos``; the destination one of ``destinations`` (by server and
    namespace); a cluster-scoped kind must be in ``clusterResourceWhitelist`` (empty or
    absent: none); a namespaced kind must not be in ``namespaceResourceBlacklist``.
    """
    spec = project.get("spec", {})
    if not any(_glob(pattern, repo_url) for pattern in spec.get("sourceRepos", [])):
        return f"repository {repo_url} is not one of the project's sourceRepos"
    if namespace is None:
        if not _listed(spec.get("clusterResourceWhitelist") or [], group, kind):
            return f"cluster-scoped {kind} is not in the project's clusterResourceWhitelist"
        return None
    destinations = spec.get("destinations", [])
    if not any(
        _glob(target.get("server", ""), server) and _glob(target.get("namespace", ""), namespace)
        for target in destinations
    ):
        return f"namespace {namespace} on {server} is not one of the project's destinations"
    if _listed(spec.get("namespaceResourceBlacklist") or [], group, kind):
        return f"{kind} is in the project's namespaceResourceBlacklist"
    return None
