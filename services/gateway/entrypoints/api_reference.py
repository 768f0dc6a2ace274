"""The interactive API reference (``/schema``) with its Swagger UI assets served by the gateway.

Litestar's Swagger plugin loads the UI's JavaScript and CSS from a CDN by default, which
leaves the page blank offline or in an air-gapped cluster. The assets are vendored under
``swagger_ui/`` (version and source in its README) and served at ``/schema/static/``,
without authentication, like the page itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

SWAGGER_UI_VERSION: Final = "5.36.0"
ASSETS_DIR: Final = Path(__file__).resolve().parent / "swagger_ui"
# Below the OpenAPI router's own path (``/schema``), so every piece of the page is in one place.
STATIC_PATH: Final = "/static"


class SelfHostedSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI whose page references the gateway's own copies of the assets only."""

    def __init__(self, schema_path: str, *, path: str = "/") -> None:
        prefix = f"{schema_path.rstrip('/')}{STATIC_PATH}"
        super().__init__(
            version=SWAGGER_UI_VERSION,
            js_url=f"{prefix}/swagger-ui-bundle.js",
            css_url=f"{prefix}/swagger-ui.css",
            standalone_preset_js_url=f"{prefix}/swagger-ui-standalone-preset.js",
            path=path,
            # Litestar's default favicon is a CDN URL too.
            favicon=f"<link rel='icon' type='image/png' href='{prefix}/favicon-32x32.png'>",
        )

    def receive_router(self, router: Router) -> None:
        """Adds the assets to the router that serves the page (after Litestar's own routes)."""
        super().receive_router(router)
        router.register(
            create_static_files_router(
                path=STATIC_PATH,
                directories=[ASSETS_DIR],
                name="swagger-ui-assets",
                include_in_schema=False,
                # The files change only with SWAGGER_UI_VERSION, i.e. with a gateway release.
                cache_control=CacheControlHeader(max_age=3600),
            )
        )
