"""Settings of the intake service: the kit's groups and its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from libs.settings import Bounds, PlatformSettings, setting


@dataclass(frozen=True)
class IntakeSettings(PlatformSettings):
    service_name: str = setting("PLATFORM_SERVICE_NAME", "intake", doc="Name used in logs and metrics.")
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9101", doc="host:port for /healthz, /readyz and /metrics."
    )
    expiry_sweep_interval_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_EXPIRY_SWEEP_INTERVAL_SECONDS",
        60.0,
        doc="How often ready environments past their expires_at are torn down (0 turns the sweeper off, "
        "and with it the anti-entropy pass and the one that records events older replicas staged "
        "during an upgrade).",
    )
    expiry_sweep_batch: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_EXPIRY_SWEEP_BATCH", 100, doc="Requests expired per sweeper transaction."
    )
    reconcile_deadline_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_RECONCILE_DEADLINE_SECONDS",
        900.0,
        doc="A request queued, reconciling or tearing down without change for this long is asked "
        "for again as a new generation (anti-entropy; 0 turns it off). Runs with the expiry sweeper.",
    )
