"""The deployables (from the services' own declarations) and where their settings and composition roots live."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from libs.settings import secret_variables
from services.tools.platformctl.settings import CliSettings
from services.tools.topology import SERVICES_DIR, bus_services, deployables

# Start order for the dev stack: the bus services in pipeline order, the gateway (which
# calls them) last.
SERVICES = deployables()
BACKEND_SERVICES = bus_services()


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
    # <Name>Settings composes the kit's groups and the service's own (the module may declare groups too).
    settings_class = getattr(settings_module, f"{normalized.title().replace('_', '')}Settings")
    # A service with migrations owns the Postgres schema of its name; the gateway owns no data.
    schema = normalized if (SERVICES_DIR / normalized / "migrations").is_dir() else None
    return ServiceEntry(normalized, settings_class, schema, package)


def ops_port_order() -> tuple[str, ...]:
    """The bus services by the port of their PLATFORM_HEALTH_ADDRESS default (9101, 9102, ...):
    platformd dev gives them ports in this order from its base, as compose.yaml and the charts do."""
    return tuple(sorted(BACKEND_SERVICES, key=lambda name: _default_port(service_entry(name).settings_class)))


def _default_port(settings_class: type[Any]) -> int:
    address: str = settings_class.health_address
    return int(address.rsplit(":", 1)[1])


def own_secrets(name: str) -> frozenset[str]:
    """The secret variables ``name``'s settings class declares: all a process of it may hold."""
    return frozenset(secret_variables(service_entry(name).settings_class))


def platform_secrets() -> frozenset[str]:
    """Every secret variable of the platform's processes and of ``platformctl`` (a user's token
    in the launcher's shell is a secret no service reads)."""
    return frozenset(secret_variables(CliSettings)).union(*(own_secrets(name) for name in SERVICES))
