"""platformctl's flag parsing and error formatting."""

from __future__ import annotations

import jwt
import pytest

from services.tools.platformctl import commands, context, event_commands
from services.tools.platformctl.client import CliError, describe_details, redact
from services.tools.platformctl.commands import parse_hours, parse_labels
from services.tools.platformctl.main import build_parser
from services.tools.platformctl.tokens import mint, parse_duration, split_teams


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("3600s", 3600), ("90", 90), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5", "0", "1w", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_teams_repeat_or_split_on_commas() -> None:
    assert split_teams(["a", "b,c", " d , "]) == ["a", "b", "c", "d"]
    assert split_teams(None) is None


def test_labels_and_hours() -> None:
    assert parse_labels("pr=42, tier=web") == {"pr": "42", "tier": "web"}
    assert parse_labels(None) is None
    with pytest.raises(CliError, match="--labels"):
        parse_labels("pr")
    assert parse_hours("24") == 24
    assert parse_hours("24h") == 24
    with pytest.raises(CliError, match="--ttl"):
        parse_hours("a day")


def test_minted_claims() -> None:
    token = mint(
        secret="s" * 32,
        subject="u",
        actor="a@example.com",
        role="admin",
        ttl_seconds=60,
        teams=["x"],
        issuer="iss",
        audience="aud",
        now=1000,
    )
    claims = jwt.decode(token, "s" * 32, algorithms=["HS256"], audience="aud", options={"verify_exp": False})
    assert claims == {
        "sub": "u",
        "email": "a@example.com",
        "role": "admin",
        "teams": ["x"],
        "iss": "iss",
        "aud": "aud",
        "iat": 1000,
        "exp": 1060,
    }


def test_error_details_and_urls_for_messages() -> None:
    details = [{"field": "team", "message": "is required"}, {"field": "region", "message": "unknown"}]
    assert describe_details(details) == "team: is required; region: unknown"
    assert redact("https://user:secret@api.example.com:8443/x") == "https://api.example.com:8443/x"
    assert redact("http://localhost:8080") == "http://localhost:8080"


@pytest.mark.parametrize(
    "argv",
    [
        ["request", "approve", "--id", "req-1", "--approval-secret", "s"],
        ["request", "approve", "--id=req-1", "--approval-secret=s"],
    ],
)
def test_approve_takes_both_flag_forms(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.id, args.approval_secret, args.run) == ("req-1", "s", commands.request_approve)


def test_every_request_command_is_registered() -> None:
    parser = build_parser()
    for argv, run in (
        (["request", "reject", "--id", "r", "--reason=no"], commands.request_reject),
        (["request", "reconcile", "--id", "r", "--if-version", "3"], commands.request_reconcile),
        (["request", "extend", "--id", "r", "--ttl", "48h"], commands.request_extend),
        (["request", "delete", "--id=r"], commands.request_delete),
        (["request", "wait", "--id", "r", "--for", "deleted"], commands.request_wait),
        (["events", "tail", "--count", "2"], event_commands.events_tail),
        (["events", "dlq", "--service=intake", "--all"], event_commands.events_dlq),
        (["events", "replay", "--service", "intake", "--id", "7"], event_commands.events_replay),
        (["--api=http://x", "-o", "yaml", "request", "get", "--id", "r"], commands.request_get),
    ):
        assert parser.parse_args(argv).run is run, argv


@pytest.mark.parametrize(
    ("status", "target", "outcome"),
    [
        ("ready", "ready", context.EXIT_OK),
        ("failed", "ready", context.EXIT_FAILED),
        ("rejected", "ready", context.EXIT_FAILED),
        ("deleting", "ready", context.EXIT_FAILED),
        ("reconciling", "ready", None),
        ("deleting", "deleted", None),
        ("expiring", "deleted", None),
        ("deleted", "deleted", context.EXIT_OK),
        ("failed", "deleted", context.EXIT_FAILED),
        ("pending_approval", "approved", None),
        ("queued", "approved", context.EXIT_OK),
        ("rejected", "approved", context.EXIT_FAILED),
    ],
)
def test_what_wait_makes_of_a_status(status: str, target: str, outcome: int | None) -> None:
    assert commands.wait_outcome(status, target) == outcome
