"""Settings of the policy service: the kit's groups and its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from libs.settings import Bounds, PlatformSettings, setting


@dataclass(frozen=True)
class PolicySettings(PlatformSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "policy", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9102", doc="host:port for /healthz, /readyz and /metrics."
    )
    kubernetes_schema_version: str = setting(
        "PLATFORM_KUBERNETES_SCHEMA_VERSION",
        "1.30.0",
        doc="Kubernetes version whose OpenAPI schemas policy-pack manifests are checked against when an"
        " admin saves a pack (the renderer validates every rendered manifest against the same version).",
    )
    default_team_budget_usd: Annotated[float | None, Bounds(ge=0)] = setting(
        "PLATFORM_DEFAULT_TEAM_BUDGET_USD",
        50000.0,
        doc="Monthly budget (USD) of every team an admin has not given one (PUT /v1/teams/{team}/budget);"
        " empty: such teams have no budget.",
    )
