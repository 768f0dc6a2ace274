"""The walking skeleton end to end: seven processes, real HTTP, real git, real NATS/Postgres."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from contracts.catalog import SERVICES
from tests.support.api_flows import PREVIEW
from tests.support.rendered_bundles import CORE_FILES
from tests.support.seed_plans import QUOTAS
from tests.support.stack import RunningStack


def test_preview_request_becomes_ready_with_one_pushed_commit(stack: RunningStack) -> None:
    with stack.client() as api:
        created = api.post("/v1/environment-requests", json=PREVIEW)
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        assert created.json()["status"] == "submitted"

        ready = stack.wait_for_status(api, request_id, {"ready", "failed", "rejected"})

    assert ready["status"] == "ready", ready.get("last_error")
    suffix = request_id[-8:]
    assert ready["namespace"] == f"payments-payments-api-{suffix}"
    assert ready["gitops_path"] == f"clusters/us-east-1/teams/payments/payments-api/{request_id}"
    assert ready["git_branch"] == "main"
    assert ready["cluster_status"] == "not_applied"
    assert ready["drift_status"] == "not_checked"
    assert ready["generation"] == 1
    assert ready["expires_at"] is not None
    assert ready["created_by"] == "alice@example.com"
    assert ready["git_commit_sha"] == stack.git("rev-parse", "main").strip()

    # Exactly one commit for the request in the remote's history, carrying its trailers.
    commits = stack.commits_for(request_id)
    assert commits == [ready["git_commit_sha"]]
    message = stack.git("log", "-1", "--format=%B", commits[0])
    assert message.startswith(f"reconcile {request_id} for payments/payments-api")
    assert f"Platform-Request: {request_id}" in message
    assert "Platform-Generation: 1" in message

    # The six files, as real Kubernetes YAML with the seed quota of the preview class.
    path = ready["gitops_path"]
    listed = stack.git("ls-tree", "--name-only", f"main:{path}").split()
    # The six baseline files, plus any extra objects the class's policy packs contribute.
    assert [name for name in listed if not name.startswith("pack-")] == sorted(CORE_FILES)
    documents = {name: yaml.safe_load(stack.git("show", f"main:{path}/{name}")) for name in listed}
    namespace = documents["namespace.yaml"]
    assert (namespace["apiVersion"], namespace["kind"], namespace["metadata"]["name"]) == (
        "v1",
        "Namespace",
        ready["namespace"],
    )
    assert namespace["metadata"]["labels"]["platform.example.com/request-id"] == request_id
    quota = documents["resourcequota.yaml"]
    assert quota["kind"] == "ResourceQuota"
    assert quota["metadata"] == {
        **quota["metadata"],
        "name": "platform-defaults",
        "namespace": ready["namespace"],
    }
    assert quota["spec"]["hard"] == QUOTAS["preview"]
    limits = documents["limitrange.yaml"]["spec"]["limits"][0]
    assert (limits["type"], limits["default"], limits["defaultRequest"], limits["max"]) == (
        "Container",
        {"cpu": "500m", "memory": "512Mi"},
        {"cpu": "500m", "memory": "512Mi"},
        {"cpu": "2", "memory": "2Gi"},
    )
    assert documents["networkpolicy.yaml"]["metadata"]["name"] == "default-deny-ingress"
    assert documents["policypack.yaml"]["data"]["policy-packs"].split("\n") == [
        "baseline-security",
        "preview-networking",
        "cost-guardrails",
    ]
    application = documents["argocd-application.yaml"]
    assert application["kind"] == "Application"
    assert application["spec"]["destination"]["namespace"] == ready["namespace"]
    assert application["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert [source["repoURL"] for source in application["spec"]["sources"]] == [PREVIEW["repository"]]

    # The environment's own Argo CD project is published beside it, and the Application is in
    # it: only the request's repository, only the environment's namespace, nothing
    # cluster-scoped, and the platform's guard rails out of the app repository's reach.
    project = documents["argocd-appproject.yaml"]
    assert project["kind"] == "AppProject"
    assert application["spec"]["project"] == project["metadata"]["name"] != "default"
    assert project["spec"]["sourceRepos"] == [PREVIEW["repository"]]
    assert project["spec"]["destinations"] == [
        {"server": "https://kubernetes.default.svc", "namespace": ready["namespace"]}
    ]
    assert project["spec"]["clusterResourceWhitelist"] == []
    assert {(entry["group"], entry["kind"]) for entry in project["spec"]["namespaceResourceBlacklist"]} == {
        ("", "Namespace"),
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("argoproj.io", "*"),
        ("*.fluxcd.io", "*"),
    }
    # The platform's own objects reach the cluster through their own Application.
    baseline = documents["argocd-baseline-application.yaml"]
    assert baseline["spec"]["sources"][0]["path"] == path
    assert baseline["spec"]["sources"][0]["directory"] == {"exclude": "argocd-*.yaml"}


def test_timeline_lists_the_whole_pipeline(stack: RunningStack) -> None:
    with stack.client() as api:
        request_id = api.post("/v1/environment-requests", json={**PREVIEW, "app": "ledger"}).json()["id"]
        stack.wait_for_status(api, request_id, {"ready"})
        timeline = api.get(f"/v1/environment-requests/{request_id}/events").json()["items"]
    assert [entry["type"] for entry in timeline] == [
        "request.submitted",
        "request.policy_evaluated",
        "request.approved",
        "request.reconcile_requested",
        "request.rendered",
        "request.published",
        "request.bootstrapped",
    ]
    assert [entry["status_after"] for entry in timeline] == [
        "submitted",
        "submitted",
        "approved",  # no approval needed: approved at once, then queued by the reconcile
        "queued",
        "reconciling",
        "reconciling",
        "ready",
    ]
    assert all(entry["applied"] for entry in timeline)


def test_one_trace_spans_the_whole_lifecycle(stack: RunningStack) -> None:
    """The trace context of the HTTP call rides the outbox and NATS headers through every service."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    with stack.client() as api:
        created = api.post(
            "/v1/environment-requests",
            json={**PREVIEW, "app": "traced"},
            headers={"traceparent": traceparent},
        )
        request_id = created.json()["id"]
        stack.wait_for_status(api, request_id, {"ready"})
    events = stack.events(request_id)
    assert {envelope.source for envelope, _ in events} == set(SERVICES)
    assert {headers["traceparent"].split("-")[1] for _, headers in events} == {trace_id}
    for envelope, headers in events:
        assert headers["Nats-Msg-Id"] == envelope.id
        # CloudEvents structured mode: the attributes are in the body, none in ce-* headers.
        assert headers["content-type"] == "application/cloudevents+json"
        assert not [name for name in headers if name.lower().startswith("ce-")]


def test_service_ops_ports_serve_health_and_metrics(stack: RunningStack) -> None:
    for name in ("intake", "renderer", "git_publisher"):
        base = stack.processes.ops_url(name)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        assert "platform_events_handled_total" in httpx.get(f"{base}/metrics").text
    gateway_metrics = httpx.get(f"{stack.api_url}/metrics").text
    assert "platform_http_requests_total" in gateway_metrics


def test_listing_and_classes(stack: RunningStack) -> None:
    with stack.client(role="viewer") as api:
        classes = api.get("/v1/environment-classes")
        assert classes.status_code == 200
        assert [c["name"] for c in classes.json()["items"]] == ["preview", "production", "shared-staging"]
        listed = api.get("/v1/environment-requests", params={"team": "payments", "status": "ready"})
        assert listed.status_code == 200
        assert all(item["team"] == "payments" for item in listed.json()["items"])


def test_invalid_request_is_rejected_before_anything_is_stored(stack: RunningStack, tmp_path: Path) -> None:
    with stack.client() as api:
        before = len(api.get("/v1/environment-requests", params={"limit": 200}).json()["items"])
        response = api.post(
            "/v1/environment-requests", json={**PREVIEW, "team": "../../etc", "ttl_hours": 1000}
        )
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "validation"
        assert {d["field"] for d in body["details"]} == {"team", "ttl_hours"}
        after = len(api.get("/v1/environment-requests", params={"limit": 200}).json()["items"])
    assert after == before
