"""The seven deployables and where their settings and composition roots live."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# Start order for the dev stack: producers of the catalog first, the gateway last.
SERVICES = ("policy", "intake", "approval", "renderer", "git_publisher", "cluster_bootstrapper", "gateway")
BACKEND_SERVICES = SERVICES[:-1]


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    settings_class: type[Any]
    schema: str | None
    package: str

    def bootstrap_function(self) -> Any:
        return importlib.import_module(f"{self.package}.bootstrap").bootstrap


def service_entry(name: str) -> ServiceEntry:
    """Look up a service by name (``git-publisher`` and ``git_publisher`` both work)."""
    normalized = name.replace("-", "_")
    if normalized not in SERVICES:
        raise KeyError(name)
    package = f"services.{normalized}"
    settings_module = importlib.import_module(f"{package}.settings")
    settings_class = next(
        value
        for key, value in vars(settings_module).items()
        if key.endswith("Settings") and getattr(value, "__module__", "") == settings_module.__name__
    )
    schema = None if normalized == "gateway" else normalized
    return ServiceEntry(normalized, settings_class, schema, package)
