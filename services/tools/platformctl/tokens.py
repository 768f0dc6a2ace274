"""Development tokens: HS256 JWTs with the claims the gateway reads by default."""

from __future__ import annotations

import re
import time
import warnings
from typing import Any

import jwt

_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``1h``, ``30m``, ``3600s``, ``2d`` or plain seconds -> seconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"expected a duration like 1h, 30m, 3600s or plain seconds, got {text!r}")
    seconds = float(match["value"]) * _UNIT_SECONDS[match["unit"]]
    if seconds <= 0:
        raise ValueError(f"the duration must be positive, got {text!r}")
    return seconds


def split_teams(values: list[str] | None) -> list[str] | None:
    """``--team a --team b,c`` -> ``["a", "b", "c"]``; no flag -> None (an unrestricted token)."""
    if values is None:
        return None
    return [team.strip() for value in values for team in value.split(",") if team.strip()]


def mint(
    *,
    secret: str,
    subject: str,
    actor: str | None,
    role: str,
    ttl_seconds: float,
    teams: list[str] | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "role": role, "iat": issued, "exp": issued + int(ttl_seconds)}
    if actor:
        claims["email"] = actor
    if teams is not None:
        claims["teams"] = teams
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    with warnings.catch_warnings():
        # Short development secrets are the user's choice; the gateway refuses them in strict mode.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)
