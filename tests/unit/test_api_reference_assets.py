"""The Swagger UI files the gateway serves at /schema/static: present, licensed, the version
the code names, and shipped in the package (not only in a source checkout)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from services.gateway.entrypoints.api_reference import ASSETS_DIR, SWAGGER_UI_VERSION

ROOT = Path(__file__).resolve().parents[2]
SERVED = ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "favicon-32x32.png")


def test_every_served_asset_is_vendored_with_its_licence() -> None:
    for name in (*SERVED, "LICENSE", "NOTICE", "README.md"):
        assert (ASSETS_DIR / name).is_file(), name
    assert "Apache License" in (ASSETS_DIR / "LICENSE").read_text(encoding="utf-8")


def test_the_vendored_version_is_the_one_the_code_and_readme_name() -> None:
    bundle = (ASSETS_DIR / "swagger-ui-bundle.js").read_text(encoding="utf-8")
    assert f'"{SWAGGER_UI_VERSION}"' in bundle  # swagger-ui embeds its own version string
    assert SWAGGER_UI_VERSION.startswith("5.")
    assert f"swagger-ui-dist {SWAGGER_UI_VERSION}" in (ASSETS_DIR / "README.md").read_text(encoding="utf-8")


def test_the_assets_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    package_dir = ASSETS_DIR.parent
    package = ".".join(package_dir.relative_to(ROOT).parts)
    patterns = package_data.get(package, []) + package_data.get("*", [])
    for path in sorted(ASSETS_DIR.iterdir()):
        relative = path.relative_to(package_dir).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
