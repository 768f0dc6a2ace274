"""Settings of the approval service: the kit's groups, the attestation keys, and its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from libs.settings import AttestationSettings, Bounds, PlatformSettings, setting


@dataclass(frozen=True)
class ApprovalSettings(PlatformSettings, AttestationSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "approval", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9103", doc="host:port for /healthz, /readyz and /metrics."
    )
    approval_record_wait_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_APPROVAL_RECORD_WAIT_SECONDS",
        3.0,
        doc="How long approve/reject wait for a policy decision the service has not processed yet.",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.approval_record_wait_seconds >= self.rpc_handler_timeout_seconds:
            # approve/reject wait inside the RPC handler: a wait as long as its deadline would
            # answer "unavailable" instead of "the decision is not recorded yet".
            problems.append(
                "PLATFORM_APPROVAL_RECORD_WAIT_SECONDS must be below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS"
            )
        if self.is_strict:
            # Checking approvers' signatures is this service's job: it needs the key they sign with.
            if not self.approval_hmac_secret:
                problems.append("PLATFORM_APPROVAL_HMAC_SECRET is required in strict production mode")
            problems += self.short_secret_problems("PLATFORM_APPROVAL_HMAC_SECRET", self.approval_hmac_secret)
        return problems
