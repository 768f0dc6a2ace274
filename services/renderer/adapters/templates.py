"""The Jinja2 templates of the manifests (``services/renderer/templates``), one per object.

Templates hold structure only. Values reach the text through the ``yaml`` / ``yaml_block``
filters (:mod:`services.renderer.domain.yaml_values`), and the environment enforces that:
its ``finalize`` hook refuses any ``{{ expression }}`` whose result did not come out of
one of those filters, so a template that pastes a raw value fails on every render instead
of becoming an injection point. Undefined variables are errors, autoescaping is off (YAML
is not HTML), and loading happens once, at construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, TemplateError

from services.renderer.domain.yaml_values import block, flow

TEMPLATE_NAMES = (
    "namespace.yaml.j2",
    "resourcequota.yaml.j2",
    "limitrange.yaml.j2",
    "networkpolicy.yaml.j2",
    "policypack.yaml.j2",
    "argocd-baseline-application.yaml.j2",
    "argocd-appproject.yaml.j2",
    "argocd-application.yaml.j2",
    "pack-manifest.yaml.j2",
)


class SerializedYaml(str):
    """Text produced by the YAML serializer, the only thing a template may output."""

    __slots__ = ()


class RawValueInTemplate(TemplateError):
    """A template printed a value without passing it through the YAML serializer."""


def _yaml(value: Any) -> SerializedYaml:
    return SerializedYaml(flow(value))


def _yaml_block(value: Any, indent: int) -> SerializedYaml:
    return SerializedYaml(block(value, indent))


def _only_serialized(value: Any) -> Any:
    if not isinstance(value, SerializedYaml):
        raise RawValueInTemplate("every value must go through the yaml or yaml_block filter")
    return value


def manifest_environment() -> Environment:
    """The Jinja2 environment of the manifest templates, with the serializer filters and guard."""
    environment = Environment(
        loader=PackageLoader("services.renderer", "templates"),
        undefined=StrictUndefined,
        autoescape=False,  # noqa: S701 - the output is YAML; values are escaped by the yaml filter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_only_serialized,
    )
    environment.filters["yaml"] = _yaml
    environment.filters["yaml_block"] = _yaml_block
    return environment


class ManifestTemplates:
    """Renders manifest templates by name."""

    def __init__(self) -> None:
        environment = manifest_environment()
        # Compile everything now: a broken template stops the service at start, not per event.
        self._templates = {name: environment.get_template(name) for name in TEMPLATE_NAMES}

    def render(self, template: str, context: Mapping[str, Any]) -> str:
        return self._templates[template].render(context)
