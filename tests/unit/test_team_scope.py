"""Whose teams a caller acts for is one rule (contracts/roles.py), used by intake for requests
and by policy for team budgets; a second copy in a service is a test failure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from contracts.models import Actor
from contracts.roles import acts_for, teams_in_scope

ROOT = Path(__file__).resolve().parents[2]


def actor(role: str, teams: list[str] | None) -> Actor:
    return Actor(subject="someone", actor="someone@example.com", role=role, teams=teams)


@pytest.mark.parametrize("role", ["viewer", "requester", "approver"])
def test_a_token_with_a_teams_claim_acts_for_those_teams_only(role: str) -> None:
    caller = actor(role, ["payments", "billing"])
    assert teams_in_scope(caller) == frozenset({"payments", "billing"})
    assert acts_for(caller, "payments")
    assert not acts_for(caller, "search")


def test_an_empty_teams_claim_acts_for_no_team() -> None:
    assert teams_in_scope(actor("requester", [])) == frozenset()
    assert not acts_for(actor("requester", []), "payments")


@pytest.mark.parametrize(
    "caller",
    [actor("admin", ["payments"]), actor("admin", None), actor("viewer", None), actor("requester", None)],
    ids=["admin-with-teams", "admin", "viewer-without-claim", "requester-without-claim"],
)
def test_admins_and_tokens_without_the_claim_act_for_every_team(caller: Actor) -> None:
    assert teams_in_scope(caller) is None
    assert acts_for(caller, "any-team")


def reads_of_actor_teams(path: Path) -> list[int]:
    """Lines where ``path`` reads ``<something>.actor.teams`` or ``actor.teams``: deciding scope
    from the claim by hand instead of through contracts.roles."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr == "teams":
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name == "actor":
                lines.append(node.lineno)
    return lines


def test_no_service_decides_team_scope_by_hand() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in ("services", "libs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line in reads_of_actor_teams(path)
    ]
    assert offenders == [], "decide whose teams a caller acts for with contracts.roles"


def test_the_detector_finds_a_hand_written_scope_check(tmp_path: Path) -> None:
    planted = tmp_path / "handlers.py"
    planted.write_text(
        "def visible(query, team):\n    return query.actor.teams is None or team in query.actor.teams\n",
        encoding="utf-8",
    )
    assert reads_of_actor_teams(planted) == [2, 2]
