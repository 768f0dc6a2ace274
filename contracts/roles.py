"""The roles a bearer token can carry (the ``role`` claim by default), and whose teams a
caller acts for.

Shared by the gateway, which authorizes with them, by the services that filter and check
what a caller sees (intake's requests, policy's team budgets), and by the tools that mint or
check tokens (``platformctl token mint``), so all know the same four names and the same
team-scope rule. Which routes a role may use is the gateway's business
(``services/gateway/domain/roles.py``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from contracts.models import Actor


class Role(StrEnum):
    VIEWER = "viewer"
    REQUESTER = "requester"
    APPROVER = "approver"
    ADMIN = "admin"


# Least privileged first, as the role matrix reads.
ROLE_NAMES: Final[tuple[str, ...]] = tuple(role.value for role in Role)


def teams_in_scope(actor: Actor) -> frozenset[str] | None:
    """The teams ``actor`` acts for; None means every team.

    Admins act for every team, even when their token carries a teams claim; a token without
    the claim is unrestricted (the gateway refuses such tokens on scoped routes when team
    scoping is enforced, before any service sees them).
    """
    if actor.role == Role.ADMIN or actor.teams is None:
        return None
    return frozenset(actor.teams)


def acts_for(actor: Actor, team: str) -> bool:
    """Whether ``actor`` may see or act on what belongs to ``team``."""
    scope = teams_in_scope(actor)
    return scope is None or team in scope


def teams_phrase(teams: list[str] | frozenset[str]) -> str:
    """``["payments"]`` -> "team payments"; ``["payments", "search"]`` -> "teams payments and search"."""
    names = sorted(teams)
    if len(names) == 1:
        return f"team {names[0]}"
    return f"teams {', '.join(names[:-1])} and {names[-1]}"


def your_teams(actor: Actor) -> str:
    """Whose teams ``actor`` acts for, in words for a refusal: "you act for team payments".

    Only what the caller's own token says, so a refusal built from it tells them nothing new.
    """
    scope = teams_in_scope(actor)
    if scope is None:
        return "you act for every team"
    if not scope:
        return "your token names no teams"
    return f"you act for {teams_phrase(scope)}"
