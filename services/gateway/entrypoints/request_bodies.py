"""The request bodies as the API reference shows them: the :mod:`contracts.inputs` models.

Handlers read their bodies themselves (:mod:`.request_inputs`), so Litestar cannot infer
them; each is documented here from the model that validates it (its JSON Schema: the same
patterns, lengths, ranges and closed field sets), beside an example to start from.
"""

from __future__ import annotations

from typing import Any, cast

from litestar.openapi.spec import OpenAPIMediaType, RequestBody, Schema
from pydantic import BaseModel

from contracts.inputs import (
    ConsumerReplayInput,
    EnvironmentClassInput,
    EnvironmentRequestInput,
    ExtensionInput,
    PolicyPackInput,
    QuotaProfileInput,
    RejectionInput,
    TeamBudgetInput,
    json_schema_hook,
)


def model_body(
    model: type[BaseModel], example: dict[str, Any], description: str | None = None
) -> RequestBody:
    """``model``'s JSON Schema as a required JSON body. The schema is the model's own
    (self-contained) document; Litestar's spec objects serialize it as it is."""
    schema = {**json_schema_hook(model), "examples": [example]}
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=cast(Schema, schema))},
        required=True,
        description=description,
    )


REQUEST_EXAMPLE: dict[str, Any] = {
    "app": "payments-api",
    "team": "payments",
    "class": "preview",
    "region": "us-east-1",
    "ttl_hours": 24,
    "owner": "alice@example.com",
    "repository": "https://github.com/example/payments-api.git",
    "revision": "pr-42",
    "labels": {"pr": "42"},
}

CLASS_EXAMPLE: dict[str, Any] = {
    "description": "Short-lived preview environment for a branch or pull request.",
    "allowed_regions": ["us-east-1", "us-west-2", "eu-west-1"],
    "requires_approval": False,
    "auto_reconcile": True,
    "max_ttl_hours": 72,
    "default_namespaces": 1,
    "quota_profile": "small",
    "policy_packs": ["baseline-security", "preview-networking", "cost-guardrails"],
    "estimated_monthly_cost_usd": 150,
}
PROFILE_EXAMPLE: dict[str, Any] = {
    "description": "For load tests: medium limits, many pods.",
    "resource_quota": {
        "pods": {"min": 50, "per_namespace": 25},
        "requests.cpu": {"per_namespace": 6},
        "requests.memory": {"per_namespace": 12, "unit": "Gi"},
    },
    "limit_range": {
        "default": {"cpu": "1", "memory": "1Gi"},
        "default_request": {"cpu": "500m", "memory": "512Mi"},
        "max": {"cpu": "4", "memory": "8Gi"},
    },
}
PACK_EXAMPLE: dict[str, Any] = {
    "description": "Every environment carries a cost center and lives at most a week.",
    "rules": [
        {"type": "required_labels", "labels": ["cost-center"]},
        {"type": "max_ttl_hours", "hours": 168, "effect": "warn"},
    ],
    "manifests": [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "name": "keep-one",
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        }
    ],
    "metadata": {"owner-team": "finops"},
}


ENVIRONMENT_REQUEST = model_body(
    EnvironmentRequestInput, REQUEST_EXAMPLE, "The environment request. Unknown fields are refused."
)
EXTENSION = model_body(
    ExtensionInput, {"ttl_hours": 48}, "New TTL: 1 to the class's max_ttl_hours, counted from now"
)
REJECTION = model_body(RejectionInput, {"reason": "production changes wait for the release window"})

ENVIRONMENT_CLASS = model_body(
    EnvironmentClassInput,
    CLASS_EXAMPLE,
    "The whole class; the name comes from the URL. A full replace, not a merge: the class "
    "becomes exactly this body, and a field left out gets its default (description '', "
    "requires_approval false, approvals_required 1 with approval and 0 without, "
    "auto_reconcile true, default_namespaces 1, policy_packs [], "
    "estimated_monthly_cost_usd 0), not its current value. allowed_regions, max_ttl_hours "
    "and quota_profile are required. Unknown fields are refused; quota_profile and "
    "policy_packs must exist.",
)
QUOTA_PROFILE = model_body(
    QuotaProfileInput,
    PROFILE_EXAMPLE,
    "ResourceQuota formulas max(min, per_namespace * N) with a unit, and LimitRange values "
    "(per container) as Kubernetes quantities.",
)
POLICY_PACK = model_body(
    PolicyPackInput,
    PACK_EXAMPLE,
    "Rules (a closed set of types), manifests (NetworkPolicy, ConfigMap, LimitRange, "
    "ResourceQuota, PodDisruptionBudget; checked against the Kubernetes schemas), namespace "
    "labels and ConfigMap metadata. See docs/policy.md.",
)
CONSUMER_REPLAY = model_body(
    ConsumerReplayInput,
    {"from_sequence": 1, "dry_run": True},
    "Where the replay starts: `from_sequence` (a stream sequence) or `from_time` (RFC 3339). "
    "`dry_run` counts per event type what would be re-executed or skipped, and changes nothing.",
)
TEAM_BUDGET = model_body(
    TeamBudgetInput,
    {"monthly_usd": 5000},
    'The monthly budget in US dollars; `{"monthly_usd": null}` removes it.',
)
