"""The observability chart renders the repository's dashboards and alerts, unchanged.

Rendered by the Helm Go SDK like the service charts (tests/unit/test_charts.py), loaded in
place through its files/ link: with its
defaults the dashboard ConfigMap for the Grafana sidecar and no PrometheusRule (the CRD may
not exist); with ``prometheusRule.enabled`` the rules of deploy/observability/alerts.yaml,
their runbook links pointed at ``prometheusRule.runbookBaseUrl``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.test_charts import KUBERNETES_VERSION, NAMESPACE, helm, render

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
CHART = ROOT / "charts" / "observability"
DEFAULT_RUNBOOKS = "https://github.com/example/platform-control-plane/blob/main/docs/runbooks"


@pytest.fixture(scope="module")
def chart_dir() -> Path:
    """The chart where it is, its files/ the link to deploy/observability (Helm follows it)."""
    return CHART


@pytest.fixture(scope="module")
def chart(chart_dir: Path) -> Iterator[Any]:
    loaded = helm.Chart.load(chart_dir)
    yield loaded
    loaded.close()


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("values", [None, {"prometheusRule": {"enabled": True}}])
def test_helm_lint_is_clean(chart_dir: Path, values: dict[str, Any] | None) -> None:
    report = helm.lint(
        chart_dir, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES_VERSION}"
    )
    assert not report["errors"], report["errors"]
    assert not [m for m in report["messages"] if m["severity"] >= 2]


def test_defaults_render_the_dashboards_for_the_grafana_sidecar_and_no_rule(chart: Any) -> None:
    objects = render(chart, None)
    assert not of_kind(objects, "PrometheusRule")
    configmaps = of_kind(objects, "ConfigMap")
    dashboards = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
    assert dashboards
    assert len(configmaps) == len(dashboards)
    for configmap, path in zip(
        sorted(configmaps, key=lambda c: c["metadata"]["name"]), dashboards, strict=True
    ):
        kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())


def test_the_switch_renders_the_alerts_as_a_prometheus_rule(chart: Any) -> None:
    base_url = "https://runbooks.example.com/platform/"
    values = {
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "runbookBaseUrl": base_url,
        }
    }
    objects = render(chart, values)
    [rule] = of_kind(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    expected = (OBSERVABILITY / "alerts.yaml").read_text().replace(DEFAULT_RUNBOOKS, base_url.rstrip("/"))
    assert rule["spec"] == yaml.safe_load(expected)
    urls = [r["annotations"]["runbook_url"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert urls
    assert all(url.startswith(base_url) and url.endswith(".md") for url in urls)
    # The dashboards stay on beside it.
    assert of_kind(objects, "ConfigMap")


def copy_with_files(tmp_path: Path, make_files: Callable[[Path], None]) -> Any:
    """The chart copied without its link; ``make_files`` puts what a checkout left at files/."""
    copy = tmp_path / "observability"
    shutil.copytree(CHART, copy, symlinks=True)
    (copy / "files").unlink()
    make_files(copy / "files")
    return helm.Chart.load(copy)


def unresolved_link(files: Path) -> None:
    # What git writes for a symlink with core.symlinks=false: a file holding the target.
    files.write_text("../../deploy/observability")


def dashboards_without_alerts(files: Path) -> None:
    shutil.copytree(OBSERVABILITY / "dashboards", files / "dashboards")
    (files / "alerts.yaml").write_text("# nothing here\n")


@pytest.mark.parametrize(
    ("make_files", "complaint"),
    [
        (unresolved_link, "no dashboards in files/dashboards/*.json"),
        (dashboards_without_alerts, "files/alerts.yaml is missing or has no rule groups"),
    ],
)
def test_a_chart_whose_files_are_not_the_link_refuses_to_render(
    tmp_path: Path, make_files: Callable[[Path], None], complaint: str
) -> None:
    broken = copy_with_files(tmp_path, make_files)
    try:
        with pytest.raises(helm.HelmRenderError) as refused:
            render(broken, None)
    finally:
        broken.close()
    assert complaint in str(refused.value)
    assert "core.symlinks=true" in str(refused.value)
