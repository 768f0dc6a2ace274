"""Settings of the intake service."""

from __future__ import annotations

from dataclasses import dataclass

from libs.settings import PlatformSettings, setting


@dataclass(frozen=True)
class IntakeSettings(PlatformSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "intake", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9101", doc="host:port for /healthz, /readyz and /metrics."
    )
    expiry_sweep_interval_seconds: float = setting(
        "PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS",
        60.0,
        doc="How often ready environments past their expires_at are torn down (0 turns the sweeper off).",
    )
    expiry_sweep_batch: int = setting(
        "PLATFORM_EXPIRY_SWEEP_BATCH", 100, doc="Requests expired per sweeper transaction."
    )
    reconcile_deadline_seconds: float = setting(
        "PLATFORM_RECONCILE_DEADLINE_SECONDS",
        900.0,
        doc="A request queued, reconciling or tearing down without change for this long is asked "
        "for again as a new generation (anti-entropy; 0 turns it off). Runs with the expiry sweeper.",
    )

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.expiry_sweep_interval_seconds < 0:
            problems.append("PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS must not be negative")
        if self.reconcile_deadline_seconds < 0:
            problems.append("PLATFORM_RECONCILE_DEADLINE_SECONDS must not be negative")
        if self.expiry_sweep_batch < 1:
            problems.append("PLATFORM_EXPIRY_SWEEP_BATCH must be at least 1")
        return problems
