"""The interactive API reference (``/schema``) with its Swagger UI assets served by the gateway.

Litestar's Swagger plugin loads the UI's JavaScript and CSS from a CDN by default, which
leaves the page blank offline or in an air-gapped cluster. The assets are vendored under
``swagger_ui/`` (version and source in its README) and served at ``/schema/static/``,
without authentication, like the page itself.

The page carries no inline script: Litestar's page starts Swagger UI from an inline
``<script>`` holding the whole document, which the gateway's Content-Security-Policy
(``script-src 'self'``, :mod:`.http_headers`) forbids. Ours loads ``api-reference.js`` (the
gateway's own file beside the vendored ones), which starts Swagger UI on the served
``openapi.json``, with the online validator off, so the page fetches nothing from elsewhere.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Final

from litestar import Request
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

SWAGGER_UI_VERSION: Final = "5.36.0"
ASSETS_DIR: Final = Path(__file__).resolve().parent / "swagger_ui"
# Below the OpenAPI router's own path (``/schema``), so every piece of the page is in one place.
STATIC_PATH: Final = "/static"
# The gateway's own start-up script for the page (not part of swagger-ui-dist).
INITIALIZER: Final = "api-reference.js"


class SelfHostedSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI whose page references the gateway's own copies of the assets only."""

    def __init__(self, schema_path: str, *, path: str = "/") -> None:
        prefix = f"{schema_path.rstrip('/')}{STATIC_PATH}"
        self.initializer_url = f"{prefix}/{INITIALIZER}"
        self.document_url = f"{schema_path.rstrip('/')}/openapi.json"
        super().__init__(
            version=SWAGGER_UI_VERSION,
            js_url=f"{prefix}/swagger-ui-bundle.js",
            css_url=f"{prefix}/swagger-ui.css",
            standalone_preset_js_url=f"{prefix}/swagger-ui-standalone-preset.js",
            path=path,
            # Litestar's default favicon is a CDN URL too.
            favicon=f"<link rel='icon' type='image/png' href='{prefix}/favicon-32x32.png'>",
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """The page: the vendored assets and the start-up script, all from the gateway; no inline code."""
        title = escape(str(openapi_schema["info"]["title"]))
        page = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <title>{title}</title>
    {self.favicon}
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <link href="{escape(self.css_url)}" rel="stylesheet">
    <script src="{escape(self.js_url)}"></script>
    <script src="{escape(self.standalone_preset_js_url)}"></script>
  </head>
  <body>
    <div id="swagger-container"></div>
    <script src="{escape(self.initializer_url)}" data-openapi-url="{escape(self.document_url)}"></script>
  </body>
</html>
"""
        return page.encode()

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
