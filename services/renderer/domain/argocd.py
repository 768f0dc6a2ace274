"""A structural check of the Argo CD Application, which has no schema in kubernetes-validate.

:data:`APPLICATION_SCHEMA` is a small JSON-Schema-like description of the subset of
``argoproj.io/v1alpha1`` Application the renderer writes: required fields, types, and no
unknown keys, so a mistake in the template or the object builder fails here instead of in
Argo CD. :func:`structure_problems` understands only the keywords used below.
"""

from __future__ import annotations

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
