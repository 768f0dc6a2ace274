"""Composition root of the renderer service."""

from __future__ import annotations

from libs.kubernetes_schemas import load_schemas
from libs.retention import DAY, RetentionRule
from libs.service_kit import ServiceKit
from services.renderer.adapters.templates import ManifestTemplates
from services.renderer.domain.manifests import RenderOptions
from services.renderer.entrypoints.bus import register
from services.renderer.service_layer.handlers import RendererService
from services.renderer.service_layer.rendering import BundleRenderer
from services.renderer.settings import RendererSettings

SCHEMA = "renderer"


def build_renderer(settings: RendererSettings) -> BundleRenderer:
    """The render pipeline configured by ``settings``, with templates and schemas loaded."""
    schemas = load_schemas(settings.kubernetes_schema_version)
    options = RenderOptions(
        gitops_repo_url=settings.argocd_source_repo_url,
        label_prefix=settings.label_prefix,
        gitops_revision=settings.git_branch,
        argocd_namespace=settings.argocd_namespace,
        argocd_project=settings.argocd_project,
        argocd_baseline_project=settings.argocd_baseline_project,
        destination_server=settings.argocd_destination_server,
        app_path=settings.argocd_app_path,
    )
    renderer = BundleRenderer(options=options, templates=ManifestTemplates(), schemas=schemas)
    renderer.warm_up()
    return renderer


async def bootstrap(settings: RendererSettings) -> ServiceKit:
    # Templates and schemas load before any connection: a bad setting fails fast.
    renderer = build_renderer(settings)
    kit = await ServiceKit.open(
        service="renderer", schema=SCHEMA, settings=settings, package="services.renderer"
    )
    register(kit, RendererService(renderer=renderer))
    # A stored bundle serves redeliveries of its render; past the stream's retention none come.
    kit.retention.add(
        RetentionRule(
            "bundles", "bundles", "created_at < %(cutoff)s", settings.retention_service_records_days * DAY
        )
    )
    return kit
