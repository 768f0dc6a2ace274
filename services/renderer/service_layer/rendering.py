"""The render pipeline of one bundle: intended objects → templates → read-back → schemas.

A bundle leaves this function only if every file parsed back to exactly its intended
object and that object passed its schema; anything else is a :class:`BundleInvalid`
naming the file and the problem. Rendering is deterministic: the same request, plan and
options give the same bytes and therefore the same digest.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.models import PACK_KINDS, EnvironmentPlan, RequestSpec
from libs.kubernetes_schemas import KubernetesSchemas
from services.renderer.adapters.templates import ManifestTemplates
from services.renderer.domain.argocd import APPLICATION_SCHEMA, APPPROJECT_SCHEMA, Schema, structure_problems
from services.renderer.domain.bundle import Bundle, BundleFile, BundleInvalid, check_rendered, invalid_bundle
from services.renderer.domain.manifests import RenderOptions, Validation, desired_bundle
from services.renderer.domain.yaml_values import UnrepresentableValue

CORE_KINDS = [
    ("v1", "Namespace"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ConfigMap"),
]

_ARGOCD_SCHEMAS: dict[Validation, Schema] = {
    Validation.ARGOCD_APPLICATION: APPLICATION_SCHEMA,
    Validation.ARGOCD_APPPROJECT: APPPROJECT_SCHEMA,
}


@dataclass(frozen=True)
class BundleRenderer:
    options: RenderOptions
    templates: ManifestTemplates
    schemas: KubernetesSchemas

    def warm_up(self) -> None:
        """Load every schema the renderer can need, so the first event is as fast as the rest."""
        self.schemas.warm_up(sorted(set(CORE_KINDS) | PACK_KINDS))

    def render(self, request_id: str, generation: int, spec: RequestSpec, plan: EnvironmentPlan) -> Bundle:
        """The validated bundle of ``request_id`` at ``generation``, or :class:`BundleInvalid`."""
        desired = desired_bundle(request_id, spec, plan, self.options)
        files = []
        for manifest in desired.manifests:
            try:
                text = self.templates.render(manifest.template, manifest.context)
            except UnrepresentableValue as exc:
                raise BundleInvalid(f"{manifest.file_name}: {exc}") from None
            check_rendered(manifest.file_name, text, manifest.expected)
            argocd_schema = _ARGOCD_SCHEMAS.get(manifest.validation)
            if argocd_schema is not None:
                problems = structure_problems(manifest.expected, argocd_schema)
            else:
                problems = self.schemas.problems(manifest.expected)
            if problems:
                raise invalid_bundle(
                    f"{manifest.file_name} is not a valid {manifest.expected['kind']}", problems
                )
            files.append(BundleFile(manifest.file_name, text))
        return Bundle(
            request_id=request_id,
            generation=generation,
            namespace=desired.namespace,
            gitops_path=desired.gitops_path,
            files=tuple(files),
        )
