"""How the claims of a verified token become the caller (SPEC.md "Auth", "Claims").

- role: from the roles claim, a string or a list; the most privileged valid role wins,
  unknown names are ignored, and a token without any valid role is refused (403: the
  caller is known, it is just not allowed anything).
- actor: from the actor claim (``email``), falling back to the subject claim (``sub``).
- teams: from the teams claim, a list of strings (or one string); absent means unrestricted
  (unless team scoping is enforced), ``null`` means no team.
- actor, subject and teams are text the gateway echoes and stores (``created_by``, approvals,
  commit trailers): one with control characters, bidi controls or a BOM, or longer than its
  bound (the actor claim 254 characters, an e-mail address's limit; the subject 255; a team
  255), makes the token invalid (401). A token that could never be written into a commit
  must not be able to approve.

Claim names may be dotted paths (``realm_access.roles``) for identity providers that
nest them; a literal key with dots (``https://example.com/roles``) is tried first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.models import Actor
from contracts.roles import Role
from services.gateway.domain.errors import PermissionDenied, Unauthenticated
from services.gateway.domain.roles import ROLES_BY_PRIVILEGE, most_privileged
from services.gateway.domain.text import has_control_characters, has_format_characters

# Longest accepted claims used as text (RFC 5321 limits an address to 254 characters).
MAX_ACTOR_LENGTH = 254
MAX_SUBJECT_LENGTH = 255
MAX_TEAM_LENGTH = 255
MAX_TEAMS = 1000


@dataclass(frozen=True)
class ClaimNames:
    roles: str = "role"
    actor: str = "email"
    subject: str = "sub"
    teams: str = "teams"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller as the server resolved it."""

    subject: str
    actor: str
    role: Role
    teams: list[str] | None

    def to_actor(self) -> Actor:
        return Actor(
            subject=self.subject,
            actor=self.actor,
            role=self.role.value,
            teams=None if self.teams is None else list(self.teams),
        )


_MISSING = object()


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The value of claim ``name`` (literal key first, then a dotted path), or ``_MISSING``."""
    if name in claims:
        return claims[name]
    current: Any = claims
    for part in name.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _printable(value: str, name: str, max_length: int) -> str:
    """``value`` stripped; a claim with control or bidi characters, or too long, makes the whole
    token invalid, as a path or query value with them makes the request invalid."""
    if has_control_characters(value):
        raise Unauthenticated(f"the token's {name!r} claim contains control characters", token_presented=True)
    if has_format_characters(value):
        raise Unauthenticated(
            f"the token's {name!r} claim contains invisible format characters (bidirectional "
            "controls, zero-width characters or a byte-order mark)",
            token_presented=True,
        )
    if len(value.strip()) > max_length:
        raise Unauthenticated(
            f"the token's {name!r} claim is longer than {max_length} characters", token_presented=True
        )
    return value.strip()


def _text(claims: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = claim(claims, name)
    if isinstance(value, str) and value.strip():
        return _printable(value, name, max_length)
    return None


def resolve_role(claims: Mapping[str, Any], names: ClaimNames) -> Role:
    raw = claim(claims, names.roles)
    if isinstance(raw, str):
        candidates = [raw]
    elif isinstance(raw, list):
        candidates = [item for item in raw if isinstance(item, str)]
    else:
        candidates = []
    role = most_privileged(candidates)
    if role is None:
        known = ", ".join(r.value for r in ROLES_BY_PRIVILEGE)
        raise PermissionDenied(
            f"the token carries no platform role in claim {names.roles!r} (expected one of {known})"
        )
    return role


def resolve_teams(claims: Mapping[str, Any], names: ClaimNames) -> list[str] | None:
    raw = claim(claims, names.teams)
    if raw is _MISSING:
        return None
    if raw is None:
        # The claim is there and lists nothing: no team, not every team (an identity provider
        # writing null for a user without groups must not make them unrestricted).
        return []
    # A single team sent as a plain string is common with identity providers that
    # flatten one-element lists.
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and len(raw) > MAX_TEAMS:
        raise Unauthenticated(
            f"the token's {names.teams!r} claim lists more than {MAX_TEAMS} teams", token_presented=True
        )
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return [_printable(item, names.teams, MAX_TEAM_LENGTH) for item in raw if item.strip()]
    raise Unauthenticated(
        f"the token's {names.teams!r} claim must be a list of strings", token_presented=True
    )


def resolve_principal(claims: Mapping[str, Any], names: ClaimNames) -> Principal:
    """Build the caller from verified claims.

    Raises :class:`Unauthenticated` when the token names nobody, its teams claim is
    malformed or a claim used as text carries control characters, :class:`PermissionDenied`
    when it carries no valid role.
    """
    subject = _text(claims, names.subject, MAX_SUBJECT_LENGTH)
    actor = _text(claims, names.actor, MAX_ACTOR_LENGTH) or subject
    if actor is None:
        raise Unauthenticated(
            f"the token has neither an {names.actor!r} nor a {names.subject!r} claim", token_presented=True
        )
    teams = resolve_teams(claims, names)
    role = resolve_role(claims, names)
    return Principal(subject=subject or actor, actor=actor, role=role, teams=teams)
