"""Request ids derived from (actor, Idempotency-Key) with the installation's key, so a dry run shows the real request's manifests,
and the label keys intake reserves for Kubernetes and the policy packs."""

from __future__ import annotations

import re

import pydantic
import pytest

from contracts.inputs import EnvironmentRequestInput
from libs.errors import FieldError, field_errors_from
from services.intake.domain.model import PLACEHOLDER_REQUEST_ID, request_id_for

REQUEST_ID = re.compile(r"req-[0-9a-f]{16}")


KEY = b"this installation's request id key"


def test_the_same_actor_and_key_always_give_the_same_id() -> None:
    first = request_id_for("alice@example.com", "payments-pr-42", KEY)
    assert REQUEST_ID.fullmatch(first)
    assert request_id_for("alice@example.com", "payments-pr-42", KEY) == first


def test_the_id_cannot_be_derived_from_actor_and_key_alone() -> None:
    """Regression: the id was sha256 of actor and key, so anyone knowing both knew the id
    (req-732b280ddf7022e9 for this pair) before the request existed."""
    ids = {request_id_for("alice@example.com", "payments-pr-42", key) for key in (KEY, b"another")}
    assert len(ids) == 2
    assert "req-732b280ddf7022e9" not in ids


def test_another_actor_or_key_gives_another_id() -> None:
    ids = {
        request_id_for("alice@example.com", "k", KEY),
        request_id_for("bob@example.com", "k", KEY),
        request_id_for("alice@example.com", "k2", KEY),
        # The pair is encoded unambiguously: moving characters between the parts changes the id.
        request_id_for("alice@example.comk", "", KEY),
        request_id_for("alice@example.co", "mk", KEY),
    }
    assert len(ids) == 5


def test_without_a_key_ids_are_random_and_the_placeholder_is_never_one_of_them() -> None:
    ids = {request_id_for("alice@example.com", None, KEY) for _ in range(50)}
    assert len(ids) == 50
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids)
    assert REQUEST_ID.fullmatch(PLACEHOLDER_REQUEST_ID)
    assert PLACEHOLDER_REQUEST_ID not in ids


@pytest.mark.parametrize(
    "key",
    [
        "pod-security.kubernetes.io/enforce",
        "node.k8s.io/x",
        "kubernetes.io/arch",
        "platform.example.com/team",
    ],
)
def test_kubernetes_and_platform_label_domains_are_reserved(key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        EnvironmentRequestInput.model_validate({"labels": {key: "x"}})
    assert FieldError(
        f"labels.{key}", "label keys with a platform or Kubernetes prefix are reserved"
    ) in field_errors_from(caught.value)
