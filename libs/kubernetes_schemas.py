"""Validation against the Kubernetes OpenAPI schemas bundled with kubernetes-validate.

Every service loads its schemas through :func:`load_schemas`, so one process holds one
copy whatever the number of services in it. ``kubernetes_validate.validate`` re-reads and
re-parses the 1.8 MB definitions file on every call (~15 ms). This adapter uses the same
bundled strict schema files, the same Draft 2020-12 validator and the same reference
registry, but builds each validator once per process and caches it at module level
(~0.2 ms per object afterwards). ``tests/unit/test_renderer_rendering.py`` checks that
both agree.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
import kubernetes_validate.utils as kubernetes_validate_utils
from referencing import Registry, Resource

from libs.settings import SettingsError

SCHEMA_VERSION_SETTING = "PLATFORM_KUBERNETES_SCHEMA_VERSION"


class UnsupportedKubernetesVersion(ValueError):
    """kubernetes-validate ships no schemas for the requested version."""


def supported_versions() -> list[str]:
    return sorted(set(kubernetes_validate_utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))


def _schema_dir(version: str) -> str:
    # Strict schemas reject unknown fields, which is how a misspelt key is caught.
    return f"kubernetes-json-schema/v{version}-local-strict"


def _schema_file_stem(api_version: str, kind: str) -> str:
    # The package's naming: "networking.k8s.io/v1" -> "networking-v1", "v1" -> "v1".
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}"


_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_API_VERSION = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+([a-z]+[0-9]+)?")


@functools.cache
def _definitions(version: str) -> Resource[Any]:
    contents = kubernetes_validate_utils.schema_contents(f"{_schema_dir(version)}/_definitions.json", version)
    return Resource.from_contents(contents)


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    try:
        schema = kubernetes_validate_utils.schema_contents(
            f"{_schema_dir(version)}/{_schema_file_stem(api_version, kind)}.json", version
        )
    except FileNotFoundError:
        return None
    registry: Registry[Any] = _definitions(version) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path) or "(root)"
    # jsonschema messages can quote whole sub-objects; keep error events short.
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"{path}: {message}"


# Shapes of valid manifests remembered per schema set (each a few hundred bytes).
VALID_SHAPES_KEPT = 4096
# The metadata fields whose string values the schemas check by type alone.
_TYPE_ONLY_METADATA = ("name", "namespace", "generateName")
_TYPE_ONLY_MAPS = ("labels", "annotations")


def _shape(manifest: dict[str, Any]) -> str:
    """``manifest`` as JSON with the type-only strings of its metadata blanked: equal for two
    manifests the schemas cannot tell apart."""
    metadata = manifest.get("metadata")
    if isinstance(metadata, dict):
        blanked = {
            key: ("" if isinstance(value, str) else value) if key in _TYPE_ONLY_METADATA else value
            for key, value in metadata.items()
        }
        for field in _TYPE_ONLY_MAPS:
            values = metadata.get(field)
            if isinstance(values, dict):
                blanked[field] = {
                    key: "" if isinstance(value, str) else value for key, value in values.items()
                }
        manifest = {**manifest, "metadata": blanked}
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=repr)


class KubernetesSchemas:
    """Strict OpenAPI validation of built-in kinds for one Kubernetes version."""

    def __init__(self, version: str) -> None:
        if version not in supported_versions():
            raise UnsupportedKubernetesVersion(
                f"no schemas for Kubernetes {version} (available: {', '.join(supported_versions())})"
            )
        self.version = version
        self._valid: set[str] = set()

    def warm_up(self, kinds: list[tuple[str, str]]) -> None:
        """Load the schemas of ``kinds`` (apiVersion, kind) now rather than on the first event."""
        for api_version, kind in kinds:
            _validator(self.version, api_version, kind)

    def problems(self, manifest: dict[str, Any]) -> list[str]:
        """Every schema violation of ``manifest`` (empty when valid), most specific path first.

        A manifest shaped like one already found valid is valid: the schemas constrain
        ``metadata``'s strings (name, namespace, label and annotation values) by type only, so
        manifests that differ only there (the same objects of another request of the class)
        get the same answer, remembered rather than validated again. Only valid answers are
        remembered, so a message never names another manifest's values.
        """
        key = _shape(manifest)
        if key in self._valid:
            return []
        found = self._problems(manifest)
        if not found and len(self._valid) < VALID_SHAPES_KEPT:
            self._valid.add(key)
        return found

    def _problems(self, manifest: dict[str, Any]) -> list[str]:
        api_version, kind = str(manifest.get("apiVersion", "")), str(manifest.get("kind", ""))
        # Both become part of a schema file name: only well-formed values get that far.
        known_shape = _KIND.fullmatch(kind) is not None and _API_VERSION.fullmatch(api_version) is not None
        validator = _validator(self.version, api_version, kind) if known_shape else None
        if validator is None:
            return [f"no Kubernetes {self.version} schema for kind {kind[:64]!r} of {api_version[:64]!r}"]
        errors = sorted(validator.iter_errors(manifest), key=lambda e: [str(p) for p in e.absolute_path])
        return [_describe(error) for error in errors]


@functools.cache
def load_schemas(version: str) -> KubernetesSchemas:
    """The schemas of Kubernetes ``version``; a version kubernetes-validate lacks is a settings error.

    Schema files load when first needed (see :meth:`KubernetesSchemas.warm_up`).
    """
    try:
        return KubernetesSchemas(version)
    except UnsupportedKubernetesVersion as exc:
        raise SettingsError([f"{SCHEMA_VERSION_SETTING}: {exc}"]) from None
