"""Dashboards, alerts and traces against the real stack: seven processes, real Postgres, NATS, git.

- After one preview request, every metric a dashboard panel or an alert queries is exported
  by some process's ``/metrics`` (histograms through ``_bucket``/``_sum``/``_count``,
  counters through ``_total``), and the lifecycle metrics carry that request.
- With only ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the request's trace reaches a local OTLP
  receiver from every service on its path, database spans included.
- An alert's condition made real: the GitOps remote disappears, and the dependency alert's
  expression, evaluated over the scraped samples, names it; it clears when the remote is back.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.alerts import Sample, alert_expr, evaluate
from tests.support.api_flows import PREVIEW
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.stack import RunningStack
from tests.unit.test_observability_assets import QUERIES, SUFFIXES, metric_names


@dataclass
class Scrape:
    families: dict[str, str]  # family name -> type, over every process
    samples: list[Sample]

    def exported(self, series: str) -> bool:
        for family, kind in self.families.items():
            if series == family or series in (family + suffix for suffix in SUFFIXES.get(kind, ())):
                return True
        return False

    def values(self, name: str, **labels: str) -> list[float]:
        return [s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items()]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack_extra_env(receiver: OtlpReceiver) -> dict[str, str]:
    # Only the standard variable: no PLATFORM_OTLP_ENDPOINT, no exporter or sampler settings.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}


@dataclass(frozen=True)
class TracedRequest:
    id: str
    trace_id: str


@pytest.fixture(scope="module")
def ready_request(stack: RunningStack) -> TracedRequest:
    """One preview request, created under a trace id the test chose, that became ready."""
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    with stack.client() as api:
        created = api.post("/v1/environment-requests", json=PREVIEW, headers={"traceparent": traceparent})
        assert created.status_code == 201, created.text
        ready = stack.wait_for_status(api, created.json()["id"], {"ready", "failed", "rejected"})
    assert ready["status"] == "ready", ready.get("last_error")
    return TracedRequest(ready["id"], trace_id)


def metrics_url(stack: RunningStack, process: str) -> str:
    # The gateway serves /metrics on its API port; the backend services on their ops port.
    if stack.processes.services[process].service == "gateway":
        return f"{stack.api_url}/metrics"
    return f"{stack.processes.ops_url(process)}/metrics"


def scrape(stack: RunningStack) -> Scrape:
    families: dict[str, str] = {}
    samples: list[Sample] = []
    for process in stack.processes.services:
        text = httpx.get(metrics_url(stack, process), timeout=5).text
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            samples.extend(Sample(process, s.name, dict(s.labels), s.value) for s in family.samples)
    return Scrape(families, samples)


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 45.0, diagnose: Callable[[], str] = str
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what} {diagnose()}")
        time.sleep(0.5)


def test_every_dashboard_and_alert_metric_is_exported_and_the_request_is_counted(
    stack: RunningStack, ready_request: TracedRequest
) -> None:
    # Database facts are recomputed every few seconds, by intake and by policy each on its own
    # loop: wait until both count the ready request. (The gauges exist at 0 before that.)
    current = wait_for(
        lambda: (
            (s := scrape(stack)).values("platform_requests", status="ready", **{"class": "preview"}) == [1.0]
            and sum(s.values("platform_team_monthly_spend_usd", team="payments")) > 0
            and s
        ),
        "intake counts the ready preview request once and policy its team's spend",
    )
    missing = {
        f"{where}: {name}"
        for where, expr in QUERIES
        for name in metric_names(expr)
        if not current.exported(name)
    }
    assert not missing, sorted(missing)
    # The request went through every stage, each observed once with its class.
    assert current.values("platform_request_ready_seconds_count", **{"class": "preview"}) == [1.0]
    for stage in ("approved", "rendered", "published", "ready"):
        observed = current.values("platform_request_stage_seconds_count", stage=stage, **{"class": "preview"})
        assert observed == [1.0], stage
    assert current.values("platform_team_monthly_spend_usd", team="payments")[0] > 0
    assert sum(current.values("platform_git_seconds_count", operation="push")) >= 1
    assert sum(current.values("platform_http_requests_total", method="POST")) >= 1


def test_with_only_the_standard_endpoint_set_the_request_trace_arrives_with_database_spans(
    receiver: OtlpReceiver, ready_request: TracedRequest
) -> None:
    def trace() -> list[Any]:
        return [span for span in receiver.received() if span.trace_id == ready_request.trace_id]

    # Spans are exported in batches (every 5 s by default, OTEL_BSP_SCHEDULE_DELAY).
    wait_for(
        lambda: (
            {"platform-gateway", "platform-intake", "platform-git-publisher"}
            <= {span.service for span in trace()}
        ),
        "the trace from the gateway, intake and the git-publisher",
        diagnose=lambda: (
            f"services in the trace: {sorted({span.service for span in trace()})}, "
            f"spans received: {len(receiver.received())}, posts: {receiver.posts}"
        ),
    )
    database = [
        span
        for span in trace()
        if "postgresql" in (span.attributes.get("db.system"), span.attributes.get("db.system.name"))
    ]
    assert database, sorted({span.name for span in trace()})
    assert {span.service for span in database} >= {"platform-intake"}
    # Attribute names of the OpenTelemetry semantic conventions: HTTP server, RPC, messaging.
    spans = trace()
    assert any(span.attributes.get("http.route") == "/v1/environment-requests" for span in spans)
    assert any(span.attributes.get("rpc.method") == "create_request" for span in spans)
    consumed = {span.attributes.get("messaging.consumer.group.name") for span in spans}
    assert {"intake-requests", "git-publisher-requests"} <= consumed


def test_an_unreachable_git_remote_fires_the_dependency_alert_until_it_is_back(stack: RunningStack) -> None:
    down = alert_expr("PlatformDependencyDown")
    remote = ("gitops_remote",)

    def firing() -> dict[tuple[str, ...], float]:
        return evaluate(down, scrape(stack).samples)

    wait_for(
        lambda: scrape(stack).values("platform_dependency_up", dependency="gitops_remote"), "a first check"
    )
    assert remote not in firing()
    moved = stack.remote.with_name(stack.remote.name + ".moved")
    stack.remote.rename(moved)
    with stack.client() as api:
        try:
            # The remote is checked by using it: the next request's fetch finds it gone.
            created = api.post("/v1/environment-requests", json=PREVIEW)
            assert created.status_code == 201, created.text
            wait_for(lambda: remote in firing(), "the alert names the remote")
        finally:
            moved.rename(stack.remote)
        wait_for(lambda: remote not in firing(), "the alert clears once the remote is back", timeout=90)
        # Nothing was lost meanwhile: the request published once the remote was back.
        assert (
            stack.wait_for_status(api, created.json()["id"], {"ready", "failed"}, timeout=90)["status"]
            == "ready"
        )
