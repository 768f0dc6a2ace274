"""Who produces and who consumes each integration event: the one place that says so.

The generator (``python -m contracts.generate``) reads this to name producers in the
AsyncAPI document and to write the event catalog table of ``docs/contracts.md``; a test
fails when an event type in :data:`contracts.events.EVENT_TYPES` is missing here.
"""

from __future__ import annotations

from typing import Final

# The request.failed producer is whichever stage gave up, so no single service owns it.
ANY_STAGE: Final = "any stage"

SERVICES: Final[tuple[str, ...]] = (
    "intake",
    "policy",
    "approval",
    "renderer",
    "git_publisher",
    "cluster_bootstrapper",
)

# Event type -> the service that publishes it (the envelope's ``source``).
PRODUCERS: Final[dict[str, str]] = {
    "request.submitted": "intake",
    "request.reconcile_requested": "intake",
    "request.teardown_requested": "intake",
    "request.extended": "intake",
    "request.policy_evaluated": "policy",
    "class.upserted": "policy",
    "request.approved": "approval",
    "request.approval_recorded": "approval",
    "request.rejected": "approval",
    "request.rendered": "renderer",
    "request.promotion_opened": "git_publisher",
    "request.published": "git_publisher",
    "request.unpublished": "git_publisher",
    "request.bootstrapped": "cluster_bootstrapper",
    "request.drift_detected": "cluster_bootstrapper",
    "request.torn_down": "cluster_bootstrapper",
    "request.failed": ANY_STAGE,
    "request.stage_retrying": ANY_STAGE,
}

# Service -> the event types its durable consumers subscribe to, as NATS subject patterns
# relative to the events prefix (``*`` is one token, ``>`` the rest). Patterns rather than
# lists so that intake, which tracks every request's status, picks up new request.* events.
SUBSCRIPTIONS: Final[dict[str, tuple[str, ...]]] = {
    "intake": ("request.*", "class.upserted"),
    # rejected and teardown_requested end an environment's share of its team's budget.
    "policy": ("request.submitted", "request.rejected", "request.teardown_requested"),
    "approval": ("request.policy_evaluated",),
    "renderer": ("request.reconcile_requested",),
    "git_publisher": ("request.rendered", "request.teardown_requested"),
    "cluster_bootstrapper": ("request.published", "request.unpublished"),
}

# Event type -> what the fact means, in one sentence (used where the model has no docstring).
MEANINGS: Final[dict[str, str]] = {
    "request.submitted": (
        "An environment request passed validation and was stored; policy evaluation is next."
    ),
    "request.policy_evaluated": (
        "The policy service decided whether the request may proceed, and resolved its plan "
        "(quota, limit ranges, policy packs, cost, approvals needed)."
    ),
    "request.approved": "The request may be reconciled: approved automatically or by signed approvals.",
    "request.approval_recorded": (
        "One approver's signed approval was accepted; request.approved follows at the quorum."
    ),
    "request.extended": "The request's TTL was changed within its class maximum.",
    "request.rejected": "An approver (or the policy outcome) rejected the request; nothing will be rendered.",
    "request.reconcile_requested": (
        "Render and publish this generation of the request (automatically or by hand)."
    ),
    "request.rendered": "The renderer produced the GitOps manifests for one generation of the request.",
    "request.promotion_opened": "The manifests were pushed to a promotion branch and a pull request opened.",
    "request.published": "The manifests of one generation are committed to the GitOps repository.",
    "request.bootstrapped": (
        "The cluster side of a published generation was applied (or skipped) and checked for drift."
    ),
    "request.drift_detected": "A drift check compared the cluster with the published manifests.",
    "request.failed": "A stage gave up on the request after its retries; the error says why.",
    "request.stage_retrying": (
        "A stage could not reach a dependency and will retry at next_attempt_at; the request waits."
    ),
    "request.teardown_requested": (
        "The request was deleted or expired; its manifests and cluster objects must go."
    ),
    "request.unpublished": "The request's manifests were removed from the GitOps repository.",
    "request.torn_down": "The request's namespaces and objects are gone from the cluster.",
    "class.upserted": "An environment class was created or changed; services refresh their copy.",
}


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches exactly one token, a final ``>`` one or more."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, part in enumerate(pattern_tokens):
        if part == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or part not in ("*", subject_tokens[index]):
            return False
    return len(pattern_tokens) == len(subject_tokens)


def producer_of(event_type: str) -> str | None:
    """The producing service, :data:`ANY_STAGE`, or None when the catalog lacks the type."""
    return PRODUCERS.get(event_type)


def consumers_of(event_type: str) -> list[str]:
    """Services subscribed to ``event_type``, in :data:`SERVICES` order."""
    return [
        service
        for service in SERVICES
        if any(subject_matches(pattern, event_type) for pattern in SUBSCRIPTIONS.get(service, ()))
    ]
