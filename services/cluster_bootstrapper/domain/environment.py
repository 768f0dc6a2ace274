"""What the bootstrapper knows about one environment in the cluster (pure state rules)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from contracts.events import DriftItem

ClusterStatus = Literal["not_applied", "applied", "apply_failed", "deleted"]
DriftState = Literal["not_checked", "in_sync", "drift_corrected", "drifted"]


@dataclass
class Environment:
    """The latest generation this service acted on for a request, and the outcome."""

    request_id: str
    generation: int
    region: str
    namespace: str
    cluster_status: ClusterStatus
    drift_status: DriftState = "not_checked"
    drift_summary: list[DriftItem] = field(default_factory=list)
    commit_sha: str | None = None
    applied_at: datetime | None = None
    last_scanned_at: datetime | None = None
    torn_down_at: datetime | None = None

    @property
    def torn_down(self) -> bool:
        return self.torn_down_at is not None

    @property
    def scannable(self) -> bool:
        """Only environments this service applied, and that still exist, are checked for drift."""
        return self.cluster_status == "applied" and not self.torn_down

    def supersedes(self, generation: int) -> bool:
        """Whether an event for ``generation`` arrives too late to act on.

        Events of one request can be handled out of order across consumers and retries: a
        ``request.published`` retried after the teardown (a later generation) must not
        re-create the namespace, and an older bundle must not overwrite a newer one.
        """
        return self.generation > generation or (self.torn_down and self.generation >= generation)
