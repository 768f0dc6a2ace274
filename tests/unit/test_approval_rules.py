"""The approval rules: signatures, separation of duties, the quorum, rejection reasons."""

from __future__ import annotations

import hashlib
import hmac

import pydantic
import pytest

from contracts.attestation import approval_message, sign_approval, verify_approval
from contracts.inputs import RejectionInput
from libs.errors import Conflict, Forbidden, Unauthorized, field_errors_from
from services.approval.domain.decisions import (
    ApprovalRecord,
    ApprovalStatus,
    check_signature_format,
    same_person,
)

SECRET = "approval-secret-that-is-32-bytes!"


def record(
    required: int = 1, status: ApprovalStatus = ApprovalStatus.PENDING, created_by_subject: str | None = None
) -> ApprovalRecord:
    return ApprovalRecord(
        request_id="req-0123456789abcdef",
        class_name="production",
        created_by="alice@example.com",
        created_by_subject=created_by_subject,
        approvals_required=required,
        status=status,
    )


def test_the_client_signature_is_the_original_hmac() -> None:
    # Byte for byte what the original CLI computed: hex HMAC-SHA256 of approve:<id>:<actor>:<class>.
    expected = hmac.new(
        SECRET.encode(), b"approve:req-0123456789abcdef:bob@example.com:production", hashlib.sha256
    ).hexdigest()
    assert approval_message(
        request_id="req-0123456789abcdef", actor="bob@example.com", class_name="production"
    ) == ("approve:req-0123456789abcdef:bob@example.com:production")
    signed = sign_approval(
        SECRET, request_id="req-0123456789abcdef", actor="bob@example.com", class_name="production"
    )
    assert signed == expected
    assert verify_approval(
        SECRET, signed, request_id="req-0123456789abcdef", actor="bob@example.com", class_name="production"
    )


@pytest.mark.parametrize(
    ("actor", "class_name", "secret"),
    [
        ("carol@example.com", "production", SECRET),
        ("bob@example.com", "preview", SECRET),
        ("bob@example.com", "production", "x" * 32),
    ],
)
def test_a_signature_only_verifies_for_what_it_signed(actor: str, class_name: str, secret: str) -> None:
    signed = sign_approval(secret, request_id="req-0123456789abcdef", actor=actor, class_name=class_name)
    assert not verify_approval(
        SECRET, signed, request_id="req-0123456789abcdef", actor="bob@example.com", class_name="production"
    )


def test_verification_survives_hostile_input() -> None:
    for junk in ("", "é" * 64, "\udcff", "\ud800", "0" * 10_000):
        assert not verify_approval(SECRET, junk, request_id="r", actor="a", class_name="c")


@pytest.mark.parametrize("signature", ["", "abc", "A" * 64, "g" * 64, "a" * 63, "a" * 65, " " + "a" * 63])
def test_only_lowercase_hex_of_the_right_length_is_a_signature(signature: str) -> None:
    with pytest.raises(Unauthorized):
        check_signature_format(signature)


def test_one_approval_completes_a_quorum_of_one() -> None:
    pending = record()
    assert pending.approve("bob@example.com") is True
    assert pending.status is ApprovalStatus.APPROVED


def test_nobody_approves_their_own_request() -> None:
    with pytest.raises(Forbidden, match="separation of duties"):
        record().approve("alice@example.com")


@pytest.mark.parametrize(
    ("approver", "subject"),
    [
        # The reviewer's reproduction: the creator's token had sub=u-1234 and an email; a
        # token with the same sub and no email claim has the subject as its actor.
        ("u-1234", "u-1234"),
        # Whatever the actor says, the subject is the account.
        ("someone-else@example.com", "u-1234"),
        # Actors are e-mail addresses: case does not make another person.
        ("Alice@Example.COM", "u-9999"),
        ("ALICE@EXAMPLE.COM", None),
    ],
)
def test_the_creator_is_recognised_by_subject_or_by_actor_in_any_case(
    approver: str, subject: str | None
) -> None:
    pending = record(created_by_subject="u-1234")
    with pytest.raises(Forbidden, match="separation of duties"):
        pending.approve(approver, subject)
    assert pending.approvers == []


def test_without_the_creators_subject_the_actor_decides() -> None:
    # A decision from a policy that did not pass the subject on (an older event).
    with pytest.raises(Forbidden):
        record().approve("alice@example.com", "u-1234")
    assert record().approve("bob@example.com", "u-1234") is True


def test_another_person_may_approve() -> None:
    pending = record(created_by_subject="u-1234")
    assert pending.approve("bob@example.com", "u-5678") is True
    assert (pending.approvers, pending.approver_subjects) == (["bob@example.com"], ["u-5678"])


def test_one_person_with_two_tokens_is_one_approver() -> None:
    pending = record(required=2, created_by_subject="u-1234")
    assert pending.approve("bob@example.com", "u-5678") is False
    # Bob again, with a token lacking the email claim: the same subject, not a second vote.
    with pytest.raises(Conflict, match="1 of 2"):
        pending.approve("u-5678", "u-5678")
    with pytest.raises(Conflict, match="1 of 2"):
        pending.approve("BOB@example.com", "u-0000")
    assert pending.status is ApprovalStatus.PENDING
    assert pending.approve("carol@example.com", "u-9012") is True


def test_same_person_needs_both_subjects_to_compare_them() -> None:
    assert same_person("a@example.com", "s-1", "b@example.com", "s-1")
    assert not same_person("a@example.com", "s-1", "b@example.com", "s-2")
    assert not same_person("a@example.com", None, "b@example.com", None)
    assert same_person("a@example.com", None, "A@EXAMPLE.com", "s-2")
    # An empty subject is unknown, not a match.
    assert not same_person("a@example.com", "", "b@example.com", "")


def test_a_quorum_of_two_needs_two_distinct_approvers() -> None:
    pending = record(required=2)
    assert pending.approve("bob@example.com") is False
    with pytest.raises(Conflict, match="1 of 2"):
        pending.approve("bob@example.com")
    assert pending.status is ApprovalStatus.PENDING
    assert pending.approve("carol@example.com") is True
    assert pending.approvers == ["bob@example.com", "carol@example.com"]


def test_a_required_count_of_zero_still_needs_one_approver() -> None:
    assert record(required=0).quorum == 1


@pytest.mark.parametrize("status", [ApprovalStatus.APPROVED, ApprovalStatus.REJECTED])
def test_only_pending_records_are_decided(status: ApprovalStatus) -> None:
    with pytest.raises(Conflict, match=str(status)):
        record(status=status).approve("bob@example.com")
    with pytest.raises(Conflict):
        record(status=status).reject()


def test_a_rejection_ends_the_record() -> None:
    pending = record(required=2)
    pending.approve("bob@example.com")
    pending.reject()
    assert pending.status is ApprovalStatus.REJECTED


def test_a_reason_is_trimmed() -> None:
    assert RejectionInput.model_validate({"reason": "  no change ticket \n"}).reason == "no change ticket"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"reason"}),
        ({"reason": ""}, {"reason"}),
        ({"reason": "   "}, {"reason"}),
        ({"reason": 7}, {"reason"}),
        ({"reason": "x" * 1001}, {"reason"}),
        ({"reason": "bell\x07"}, {"reason"}),
        ({"reason": "ok", "severity": "high"}, {"severity"}),
        ({"why": "x"}, {"why", "reason"}),
    ],
)
def test_bad_rejections_name_every_field(body: dict[str, object], fields: set[str]) -> None:
    with pytest.raises(pydantic.ValidationError) as failure:
        RejectionInput.model_validate(body)
    assert {error.field for error in field_errors_from(failure.value)} == fields
