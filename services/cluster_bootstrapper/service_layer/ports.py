"""The service layer's view of a Kubernetes cluster: the port the adapter implements.

Failures are split by what retrying can achieve. :class:`ClusterUnavailable` (network,
5xx, throttling, RBAC not granted yet, a namespace still terminating) is raised out of
the handler so the kit retries with backoff; :class:`ObjectRejected` (400/422: the object
itself is invalid) is final and reported as ``apply_failed`` at once. Both messages are
written for users: they name the object and the HTTP status, never a host or a credential.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from libs.errors import PlatformError, TransientError
from services.cluster_bootstrapper.domain.manifests import DesiredObject, ObjectRef


class ClusterUnavailable(TransientError):
    """The Kubernetes API could not do it now; the same call may succeed later (transient:
    the consumer keeps retrying through a cluster outage)."""


class ObjectRejected(PlatformError):
    """The Kubernetes API refused the object as invalid; the same call will never succeed."""

    code = "validation"


class Cluster(ABC):
    """Kubernetes clusters, addressed by the environment's region."""

    @abstractmethod
    async def serves(self, region: str, api_version: str, kind: str) -> bool:
        """Whether the region's cluster serves ``kind`` in ``api_version`` (e.g. a CRD is installed)."""

    @abstractmethod
    async def apply(self, region: str, desired: DesiredObject) -> None:
        """Server-side apply ``desired`` with the service's field manager, taking over conflicts."""

    @abstractmethod
    async def read(self, region: str, ref: ObjectRef) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""

    @abstractmethod
    async def delete(self, region: str, ref: ObjectRef) -> bool:
        """Delete the object; False when it was already gone (deleting is idempotent)."""

    @abstractmethod
    async def check(self, region: str | None = None) -> None:
        """Raise unless the region's cluster answers (every configured cluster when None)."""

    def regions(self) -> list[str]:
        """The regions mapped to a cluster of their own; [] when one cluster serves them all."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook; most implementations hold nothing
        """Release connections."""
