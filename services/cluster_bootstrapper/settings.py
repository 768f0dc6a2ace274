"""Settings of the cluster-bootstrapper service: the kit's groups and its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from libs.settings import Bounds, PlatformSettings, setting


@dataclass(frozen=True)
class ClusterBootstrapperSettings(PlatformSettings):
    service_name: str = setting(
        "PLATFORM_SERVICE_NAME", "cluster_bootstrapper", doc="Name used in logs and metrics."
    )
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9106", doc="host:port for /healthz, /readyz and /metrics."
    )
    k8s_apply: bool = setting(
        "PLATFORM_K8S_APPLY",
        False,
        doc="Apply published bundles to the cluster, check drift and delete namespaces on teardown."
        " Off: environments are reported as `not_applied` and the cluster is never contacted.",
    )
    kubeconfig: Path | None = setting(
        "PLATFORM_KUBECONFIG",
        None,
        doc="kubeconfig file with one context per cluster; unset: in-cluster service account config.",
    )
    # ``None`` rather than ``{}``: ``setting()`` copies container defaults through ``list()``,
    # which would turn an empty dict default into a list.
    k8s_contexts: dict[str, str] | None = setting(
        "PLATFORM_K8S_CONTEXTS",
        None,
        doc="Region to kube context, e.g. `us-east-1=ctx-a,us-west-2=ctx-b`; an unmapped region uses"
        " the kubeconfig's current context.",
    )
    k8s_field_manager: str = setting(
        "PLATFORM_K8S_FIELD_MANAGER",
        "platform-control-plane",
        doc="Server-side apply field manager of every object this service applies (`force=true`).",
    )
    drift_scan_interval_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS",
        300.0,
        doc="Seconds between drift scans of applied environments (with self-heal); 0 disables.",
    )
    k8s_request_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS", 15.0, doc="Timeout of one Kubernetes API call."
    )

    @property
    def region_contexts(self) -> dict[str, str]:
        return dict(self.k8s_contexts or {})

    def validate(self) -> list[str]:
        problems = super().validate()
        if not self.k8s_field_manager.strip():
            problems.append("PLATFORM_K8S_FIELD_MANAGER must not be empty")
        if self.k8s_apply and self.kubeconfig is not None and not self.kubeconfig.is_file():
            # Fail at start-up, not on the first event: a typo here would otherwise surface
            # as retries and request.failed for every environment.
            problems.append("PLATFORM_KUBECONFIG: the file does not exist or is not readable")
        if self.k8s_apply and self.kubeconfig is None and self.region_contexts:
            problems.append(
                "PLATFORM_K8S_CONTEXTS needs PLATFORM_KUBECONFIG (in-cluster config has no contexts)"
            )
        return problems
