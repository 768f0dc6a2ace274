"""git-publisher's pure rules: safe paths, commit messages, the approval gate."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from contracts.attestation import attestation_message, sign_attestation, verify_attestation
from contracts.events import Attestation
from services.git_publisher.adapters.git_repository import Identity, fast_import_stream, push_refusal
from services.git_publisher.domain.approvals import ATTESTATION_INVALID, approvals_for_commit
from services.git_publisher.domain.changes import (
    Approval,
    RefusedChange,
    checked_gitops_path,
    remove_directory,
    write_directory,
)
from services.git_publisher.domain.generation_markers import (
    UnreadableMarker,
    marker_generation,
    marker_path,
    supersedes,
)

SECRET = "unit-test-approval-secret-0123456789abcdef"
REQUEST = "req-00000000000000a1"
DECIDED = datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC)


def attestation(*, secret: str = SECRET, **overrides: object) -> Attestation:
    fields: dict[str, object] = {
        "request_id": REQUEST,
        "generation": 0,
        "approver": "alice@example.com",
        "class_name": "production",
        "decided_at": DECIDED,
    }
    fields.update(overrides)
    signature = sign_attestation(secret, **fields)  # type: ignore[arg-type]
    return Attestation(**fields, signature=signature)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path",
    [
        f"clusters/us-east-1/teams/payments/api/{REQUEST}",
        f"clusters/us-east-1/teams/payments/api/{REQUEST}/",
    ],
)
def test_request_directories_are_accepted(path: str) -> None:
    assert checked_gitops_path(path, REQUEST) == f"clusters/us-east-1/teams/payments/api/{REQUEST}"


@pytest.mark.parametrize(
    "path",
    [
        f"clusters/us-east-1/teams/../../../{REQUEST}",
        f"/etc/{REQUEST}",
        f"clusters//{REQUEST}",
        f"clusters/./{REQUEST}",
        REQUEST,
        "clusters/us-east-1/teams/payments/api/req-00000000000000b2",
        f"clusters/us east/{REQUEST}",
        f"clusters/us-east-1\nM 100644 inline x/{REQUEST}",
        f"clusters\\us-east-1/{REQUEST}",
        "",
    ],
)
def test_paths_that_could_escape_or_hit_another_request_are_refused(path: str) -> None:
    with pytest.raises(RefusedChange):
        checked_gitops_path(path, REQUEST)


def test_commit_messages_carry_the_trailers() -> None:
    change = write_directory(
        request_id=REQUEST,
        generation=3,
        team="payments",
        app="api",
        gitops_path=f"clusters/us-east-1/teams/payments/api/{REQUEST}",
        files=[("namespace.yaml", "kind: Namespace\n")],
        approvals=[Approval("alice@example.com", "ab" * 32), Approval("bob@example.com", "cd" * 32)],
    )
    assert change.message == (
        f"reconcile {REQUEST} for payments/api\n\n"
        f"Platform-Request: {REQUEST}\n"
        "Platform-Generation: 3\n"
        "Approved-by: alice@example.com\n"
        f"Approval-Attestation: {'ab' * 32}\n"
        "Approved-by: bob@example.com\n"
        f"Approval-Attestation: {'cd' * 32}\n"
    )
    teardown = remove_directory(
        request_id=REQUEST, generation=4, team="payments", app="api", gitops_path=change.path
    )
    assert teardown.message.splitlines()[0] == f"teardown {REQUEST} for payments/api"
    assert teardown.desired_tree is None


def test_generation_markers_live_outside_the_environment_directories_in_256_shards() -> None:
    assert marker_path("req-3fa2c0de00000001") == ".platform/generations/3f/req-3fa2c0de00000001"
    # Not an id intake issues: spread by a hash of it.
    other = marker_path("Mixed-Case.id")
    assert re.fullmatch(r"\.platform/generations/[0-9a-f]{2}/Mixed-Case\.id", other)
    assert marker_path("Mixed-Case.id") == other


def test_a_marker_names_the_generation_of_the_last_change_and_what_it_did() -> None:
    path = f"clusters/us-east-1/teams/payments/api/{REQUEST}"
    write = write_directory(
        request_id=REQUEST, generation=3, team="payments", app="api", gitops_path=path,
        files=[("namespace.yaml", "kind: Namespace\n")], approvals=[],
    )  # fmt: skip
    removal = remove_directory(request_id=REQUEST, generation=4, team="payments", app="api", gitops_path=path)
    assert write.marker_path == removal.marker_path == marker_path(REQUEST)
    assert write.marker == b"generation: 3\nstate: published\n"
    assert removal.marker == b"generation: 4\nstate: removed\n"
    assert marker_generation(write.marker) == 3
    assert marker_generation(removal.marker) == 4
    assert marker_generation(None) is None  # no marker: the request never reached the branch


@pytest.mark.parametrize(
    "content",
    [
        b"generation: 7\r\nstate: published\r\n",
        b"generation:7",
        b"  generation: 7  \nstate: removed   \n",
        b"\xef\xbb\xbfGeneration: 7\n",
        b"state: published\n\ngeneration:\t7\n",
    ],
)
def test_a_hand_edited_marker_is_read_leniently(content: bytes) -> None:
    assert marker_generation(content) == 7


@pytest.mark.parametrize(
    "content",
    [b"", b"hand-edited\n", b"generation: seven\n", b"generation: 7 # was 6\n",
     b"generation: -1\n", b"generation: 7\ngeneration: 8\n", b"\xff\xfe"],
)  # fmt: skip
def test_a_marker_that_names_no_sure_generation_fails_closed(content: bytes) -> None:
    # Never "absent": that would let any older generation past the fence.
    with pytest.raises(UnreadableMarker):
        marker_generation(content)


RACE = "!\tabc:refs/heads/main\t[remote rejected] (failed to update ref)\nDone\n"


@pytest.mark.parametrize(
    ("output", "verdict"),
    [
        ("!\tabc:refs/heads/main\t[rejected] (fetch first)\nDone\n", "moved"),
        ("!\tabc:refs/heads/main\t[rejected] (non-fast-forward)\nDone\n", "moved"),
        ("!\tabc:refs/heads/main\t[rejected] (stale info)\nDone\n", "moved"),
        (RACE, "moved"),
        (RACE + "remote: error: cannot lock ref 'refs/heads/main': is at 1 but expected 2\n", "moved"),
        (" ! [remote rejected] main -> main (cannot lock ref 'refs/heads/main': is at 1 but expected 2)", "moved"),
        ("!\tabc:refs/heads/main\t[remote rejected] (incorrect old value provided)\n", "moved"),
        ("!\tabc:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n", "refused"),
        ("!\tabc:refs/heads/main\t[remote rejected] (push declined due to repository rule violations)\n",
         "refused"),
        # A hook's own words do not make a refusal a race.
        ("remote: size limit exceeded but expected below 100 MB\n"
         "!\tabc:refs/heads/main\t[remote rejected] (pre-receive hook declined)\n", "refused"),
        ("!\tabc:refs/heads/main\t[remote rejected] (unpacker error)\n", None),
        ("!\tabc:refs/heads/main\t[remote failure] (remote failed to report status)\n", None),
        ("fatal: unable to access '<url>': Could not resolve host\n", None),
    ],
)  # fmt: skip
def test_a_failed_push_is_told_apart_by_gits_status_of_the_ref(output: str, verdict: str | None) -> None:
    assert push_refusal(output) == verdict


@pytest.mark.parametrize(
    ("marker", "generation", "fenced"),
    [(None, 1, False), (2, 3, False), (3, 3, False), (4, 3, True)],
)
def test_only_a_newer_marker_fences_a_change_out(marker: int | None, generation: int, fenced: bool) -> None:
    assert supersedes(marker, generation) is fenced


def test_a_teardown_of_a_request_never_rendered_is_a_tombstone_only() -> None:
    tombstone = remove_directory(
        request_id=REQUEST, generation=2, team="payments", app="api", gitops_path=" "
    )
    assert tombstone.path is None
    assert tombstone.marker == b"generation: 2\nstate: removed\n"
    stream = fast_import_stream(None, [tombstone], Identity("p", "p@example.com"), 0)
    assert b"\nD " not in stream
    assert f"M 100644 inline {marker_path(REQUEST)}\n".encode() in stream
    with pytest.raises(RefusedChange):
        remove_directory(request_id="../x", generation=2, team="payments", app="api", gitops_path="")


@pytest.mark.parametrize(
    ("files", "approvals"),
    [
        ([], []),
        ([("../escape.yaml", "x")], []),
        ([("a.yaml", "x"), ("a.yaml", "y")], []),
        ([("a.yaml", "x")], [Approval("mallory\nApproved-by: ceo@example.com", "00")]),
    ],
)
def test_bundles_that_would_corrupt_the_tree_or_the_trailers_are_refused(
    files: list[tuple[str, str]], approvals: list[Approval]
) -> None:
    with pytest.raises(RefusedChange):
        write_directory(
            request_id=REQUEST,
            generation=1,
            team="payments",
            app="api",
            gitops_path=f"clusters/us-east-1/teams/payments/api/{REQUEST}",
            files=files,
            approvals=approvals,
        )


def test_a_valid_attestation_passes_the_gate_whatever_the_bundle_generation() -> None:
    # Approved at generation 0, published at generation 3: the signature covers the former.
    good = attestation()
    approvals = approvals_for_commit(
        secret=SECRET, request_id=REQUEST, class_name="production", attestations=[good]
    )
    assert approvals == [Approval("alice@example.com", good.signature)]


@pytest.mark.parametrize(
    "attestations",
    [
        [],
        [attestation(secret="some-other-secret")],
        [attestation(request_id="req-00000000000000b2")],
        [attestation(class_name="preview")],
        [attestation(), attestation(secret="forged", approver="bob@example.com")],
    ],
    ids=["none", "wrong-secret", "other-request", "other-class", "one-forged"],
)
def test_missing_or_invalid_attestations_refuse_the_publish(attestations: list[Attestation]) -> None:
    with pytest.raises(RefusedChange, match=ATTESTATION_INVALID):
        approvals_for_commit(
            secret=SECRET, request_id=REQUEST, class_name="production", attestations=attestations
        )


@pytest.mark.parametrize("required", [None, 0, 1])
def test_one_attestation_suffices_when_the_plan_requires_one_or_does_not_say(required: int | None) -> None:
    # None: a bundle from a renderer that did not pass approvals_required on.
    approvals = approvals_for_commit(
        secret=SECRET,
        request_id=REQUEST,
        class_name="production",
        attestations=[attestation()],
        required=required,
    )
    assert [a.approver for a in approvals] == ["alice@example.com"]


def test_the_plans_quorum_of_distinct_approvers_is_required() -> None:
    alice, bob = attestation(), attestation(approver="bob@example.com")
    with pytest.raises(RefusedChange, match=r"1 distinct approvers, the plan requires 2"):
        approvals_for_commit(
            secret=SECRET, request_id=REQUEST, class_name="production", attestations=[alice], required=2
        )
    # The same approver twice (in another spelling) is still one approver.
    with pytest.raises(RefusedChange, match=ATTESTATION_INVALID):
        approvals_for_commit(
            secret=SECRET,
            request_id=REQUEST,
            class_name="production",
            attestations=[alice, attestation(approver="ALICE@example.com")],
            required=2,
        )
    approvals = approvals_for_commit(
        secret=SECRET, request_id=REQUEST, class_name="production", attestations=[alice, bob], required=2
    )
    assert [a.approver for a in approvals] == ["alice@example.com", "bob@example.com"]


def test_a_tampered_field_breaks_the_signature() -> None:
    good = attestation()
    assert verify_attestation(SECRET, good)
    assert not verify_attestation(SECRET, msgspec.structs.replace(good, approver="mallory@example.com"))
    assert not verify_attestation(SECRET, msgspec.structs.replace(good, generation=1))
    assert not verify_attestation(SECRET, msgspec.structs.replace(good, signature="é" * 64))


def test_without_a_secret_nothing_approval_gated_is_published() -> None:
    with pytest.raises(RefusedChange, match=ATTESTATION_INVALID):
        approvals_for_commit(
            secret=None, request_id=REQUEST, class_name="production", attestations=[attestation()]
        )


def test_the_canonical_form_survives_json_round_trips() -> None:
    plus_two = timezone(timedelta(hours=2))
    spellings = [DECIDED, DECIDED.astimezone(plus_two), DECIDED.replace(tzinfo=None)]
    messages = {
        attestation_message(
            request_id=REQUEST, generation=0, approver="a", class_name="production", decided_at=moment
        )
        for moment in spellings
    }
    assert messages == {f"attest:{REQUEST}:0:a:production:2024-05-01T12:30:15.000000Z"}
    wire = msgspec.json.encode(attestation())
    assert verify_attestation(SECRET, msgspec.json.decode(wire, type=Attestation))
