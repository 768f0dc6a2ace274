"""Cluster-bootstrapper settings: defaults, the region map, and start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.settings import SettingsError, load_settings
from services.cluster_bootstrapper.settings import ClusterBootstrapperSettings


def test_defaults_leave_the_cluster_alone() -> None:
    settings = load_settings(ClusterBootstrapperSettings, {})
    assert settings.service_name == "cluster_bootstrapper"
    assert settings.health_address == "127.0.0.1:9106"
    assert settings.k8s_apply is False
    assert settings.kubeconfig is None
    assert settings.region_contexts == {}
    assert settings.k8s_field_manager == "platform-control-plane"
    assert settings.drift_scan_interval_seconds == 300
    assert settings.k8s_request_timeout_seconds == 15


def test_regions_map_to_kube_contexts(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    settings = load_settings(
        ClusterBootstrapperSettings,
        {
            "PLATFORM_K8S_APPLY": "on",
            "PLATFORM_KUBECONFIG": str(kubeconfig),
            "PLATFORM_K8S_CONTEXTS": "us-east-1=ctx-a, us-west-2=ctx-b",
            "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS": "0",
        },
    )
    assert settings.k8s_apply is True
    assert settings.kubeconfig == kubeconfig
    assert settings.region_contexts == {"us-east-1": "ctx-a", "us-west-2": "ctx-b"}
    assert settings.drift_scan_interval_seconds == 0


def test_bad_values_are_start_up_errors_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(
            ClusterBootstrapperSettings,
            {
                "PLATFORM_K8S_APPLY": "maybe",
                "PLATFORM_K8S_CONTEXTS": "us-east-1",
                "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS": "soon",
            },
        )
    assert {problem.split(":")[0] for problem in error.value.problems} == {
        "PLATFORM_K8S_APPLY",
        "PLATFORM_K8S_CONTEXTS",
        "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS",
    }


def test_an_unusable_cluster_configuration_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(
            ClusterBootstrapperSettings,
            {
                "PLATFORM_K8S_APPLY": "true",
                "PLATFORM_KUBECONFIG": "/does/not/exist",
                "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS": "-5",
                "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS": "0",
            },
        )
    assert error.value.problems == [
        "PLATFORM_DRIFT_SCAN_INTERVAL_SECONDS must not be negative (got -5.0)",
        "PLATFORM_K8S_REQUEST_TIMEOUT_SECONDS must be positive (got 0.0)",
        "PLATFORM_KUBECONFIG: the file does not exist or is not readable",
    ]
    with pytest.raises(SettingsError, match="needs PLATFORM_KUBECONFIG"):
        load_settings(
            ClusterBootstrapperSettings, {"PLATFORM_K8S_APPLY": "true", "PLATFORM_K8S_CONTEXTS": "a=b"}
        )
