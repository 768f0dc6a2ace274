"""platformctl's flag parsing and error formatting."""

from __future__ import annotations

import jwt
import pytest

from services.platformctl.client import CliError, describe_details, redact
from services.platformctl.commands import parse_hours, parse_labels
from services.platformctl.tokens import mint, parse_duration, split_teams

pytestmark = pytest.mark.unit


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
