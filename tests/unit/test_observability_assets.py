"""The dashboards, alerts and runbooks of deploy/observability/ and docs/runbooks/ against the code.

Every panel query and alert expression must parse as PromQL and name only metrics the
services declare (a histogram through ``_bucket``/``_sum``/``_count``, a counter through
``_total``); every alert links an existing runbook that says what it means, how to confirm,
fix and escalate; every ``platformctl`` command a runbook gives parses with the real CLI.
Whether the metrics are actually exported by a running stack is checked end to end
(tests/e2e/test_observability.py).
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from libs.telemetry import REGISTRY
from services.tools.platformctl.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/example/platform-control-plane/blob/main/docs/runbooks/"
RUNBOOK_SECTIONS = ("## What it means", "## Confirm", "## Fix", "## Escalate")
# What a histogram or a counter is queried by, besides its family name.
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every target of every dashboard panel."""
    queries = []
    for path in sorted((OBSERVABILITY / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append((f"{path.name}: {panel['title']}", target["expr"]))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def alert_queries() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in alert_rules()]


# Grafana replaces its interval variables with a duration before Prometheus sees a query.
GRAFANA_INTERVALS = re.compile(r"\$__(rate_)?interval|\$__range")


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects (parsing it on the way)."""
    return set(_selected(promql_parser.parse(GRAFANA_INTERVALS.sub("5m", expr))))


def _selected(node: Any) -> Iterator[str]:
    if isinstance(node, promql_parser.VectorSelector):
        assert node.name, f"select metrics by name, not only by matchers: {node}"
        yield node.name
        return
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from _selected(child)
    for argument in getattr(node, "args", None) or []:
        yield from _selected(argument)


def declared_metrics() -> dict[str, str]:
    """Every series name the services can export -> its family's type.

    Importing each service's composition root imports every module that declares metrics.
    """
    for bootstrap in sorted(ROOT.glob("services/*/bootstrap.py")):
        importlib.import_module(f"services.{bootstrap.parent.name}.bootstrap")
    names = {}
    for family in REGISTRY.collect():
        names[family.name] = family.type
        for suffix in SUFFIXES.get(family.type, ()):
            names[family.name + suffix] = family.type
    return names


QUERIES = dashboard_queries() + alert_queries()


def test_there_are_queries_for_every_area_the_dashboard_promises() -> None:
    used = set().union(*(metric_names(expr) for _where, expr in QUERIES))
    for metric in (
        "platform_requests",
        "platform_request_ready_seconds_bucket",
        "platform_request_stage_seconds_bucket",
        "platform_consumer_pending_messages",
        "platform_outbox_oldest_age_seconds",
        "platform_git_batch_size_bucket",
        "platform_cluster_call_seconds_bucket",
        "platform_http_requests_total",
        "platform_approvals_pending_oldest_age_seconds",
        "platform_environments_expiring_soon",
        "platform_team_monthly_budget_usd",
    ):
        assert metric in used, metric


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[where for where, _ in QUERIES])
def test_every_query_parses_and_names_declared_metrics(where: str, expr: str) -> None:
    declared = declared_metrics()
    names = metric_names(expr)
    assert names, f"{where}: selects no metric"
    assert names <= declared.keys(), (
        f"{where}: not declared by any service: {sorted(names - declared.keys())}"
    )


def test_a_misspelt_metric_or_broken_expression_is_caught() -> None:
    assert metric_names('sum by (x) (rate(platform_evnts_handled_total{outcome="ok"}[5m]))') == {
        "platform_evnts_handled_total"
    }
    assert "platform_evnts_handled_total" not in declared_metrics()
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        promql_parser.parse("max by (consumer (platform_consumer_pending_messages)")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_links_a_runbook_that_answers_the_four_questions(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert annotations["summary"]
    assert annotations["description"]
    assert rule["labels"]["severity"] in {"warning", "critical"}
    url = annotations["runbook_url"]
    assert url.startswith(RUNBOOK_URL), url
    page = RUNBOOKS / url.removeprefix(RUNBOOK_URL)
    text = page.read_text()
    assert text.startswith(f"# {rule['alert']}\n"), f"{page.name} is not the page of {rule['alert']}"
    positions = [text.find(section) for section in RUNBOOK_SECTIONS]
    assert -1 not in positions, f"{page.name}: missing one of {RUNBOOK_SECTIONS}"
    assert positions == sorted(positions), f"{page.name}: sections out of order"


def test_every_runbook_belongs_to_an_alert() -> None:
    linked = {rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_URL) for rule in alert_rules()}
    pages = {path.name for path in RUNBOOKS.glob("*.md")} - {"README.md"}
    assert pages == linked


def runbook_commands(program: str) -> list[tuple[str, str]]:
    """(page, command line) of every ``program`` line in the runbooks' shell blocks."""
    found = []
    for page in sorted(RUNBOOKS.glob("*.md")):
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.DOTALL):
            for line in block.splitlines():
                if line.startswith(program + " "):
                    found.append((page.name, line.split("  #")[0].split(" # ")[0].strip()))
    return found


@pytest.mark.parametrize(("page", "line"), runbook_commands("platformctl"))
def test_runbook_platformctl_commands_exist(page: str, line: str) -> None:
    try:
        build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as exc:
        pytest.fail(f"{page}: `{line}` is not a platformctl command ({exc})")


def test_runbooks_give_commands_to_confirm_with() -> None:
    assert len(runbook_commands("platformctl")) >= 5
    assert len(runbook_commands("curl")) >= 5
    assert len(runbook_commands("nats")) >= 4


FIRED = re.compile(r'alert_expr\("(\w+)"\)')


def test_every_alert_fires_in_a_test_that_creates_its_condition() -> None:
    """A test that makes an alert's condition real names it through ``alert_expr``; an alert
    added without one fails here."""
    fired = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        if path.name != Path(__file__).name
        for name in FIRED.findall(path.read_text())
    }
    assert fired
    assert {rule["alert"] for rule in alert_rules()} - fired == set()
