"""Settings of the approval service."""

from __future__ import annotations

from dataclasses import dataclass

from libs.settings import PlatformSettings, setting


@dataclass(frozen=True)
class ApprovalSettings(PlatformSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "approval", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9103", doc="host:port for /healthz, /readyz and /metrics."
    )
    approval_hmac_secret: str | None = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET",
        None,
        doc="Key of the approval signatures clients send and of the attestations issued.",
        secret=True,
    )
