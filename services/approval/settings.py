"""Settings of the approval service."""

from __future__ import annotations

from dataclasses import dataclass

from libs.settings import PlatformSettings, attestation_key, setting, strict_attestation_key_problems

MIN_STRICT_SECRET_BYTES = 32


@dataclass(frozen=True)
class ApprovalSettings(PlatformSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "approval", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9103", doc="host:port for /healthz, /readyz and /metrics."
    )
    approval_hmac_secret: str | None = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET",
        None,
        doc="Key of the approval signatures clients send (every approver's CLI holds it).",
        secret=True,
    )
    attestation_hmac_secret: str | None = setting(
        "PLATFORM_ATTESTATION_HMAC_SECRET",
        None,
        doc=(
            "Server-side key of the attestations issued (git-publisher verifies them with the same); "
            "unset outside strict mode: PLATFORM_APPROVAL_HMAC_SECRET."
        ),
        secret=True,
    )
    approval_record_wait_seconds: float = setting(
        "PLATFORM_APPROVAL_RECORD_WAIT_SECONDS",
        3.0,
        doc="How long approve/reject wait for a policy decision the service has not processed yet.",
    )

    @property
    def attestation_key(self) -> str | None:
        """The key attestations are signed with.

        Outside strict mode an unset attestation key falls back to the approval secret, so a
        development setup needs one secret only (at the price that approvers could forge
        attestations there). Strict mode requires a key of its own (:meth:`validate`).
        """
        return attestation_key(self.attestation_hmac_secret, self.approval_hmac_secret, strict=self.is_strict)

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.approval_record_wait_seconds < 0:
            problems.append("PLATFORM_APPROVAL_RECORD_WAIT_SECONDS must not be negative")
        elif self.approval_record_wait_seconds >= self.rpc_handler_timeout_seconds:
            # approve/reject wait inside the RPC handler: a wait as long as its deadline would
            # answer "unavailable" instead of "the decision is not recorded yet".
            problems.append(
                "PLATFORM_APPROVAL_RECORD_WAIT_SECONDS must be below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS"
            )
        if self.is_strict:
            if not self.approval_hmac_secret:
                problems.append("PLATFORM_APPROVAL_HMAC_SECRET is required in strict production mode")
            elif len(self.approval_hmac_secret.encode()) < MIN_STRICT_SECRET_BYTES:
                problems.append(
                    f"PLATFORM_APPROVAL_HMAC_SECRET must be at least {MIN_STRICT_SECRET_BYTES} bytes "
                    "in strict production mode"
                )
            problems.extend(
                strict_attestation_key_problems(self.attestation_hmac_secret, self.approval_hmac_secret)
            )
        return problems
