"""Roles and the role x action matrix (SPEC.md "Role matrix").

The gateway checks the role; the owning service checks what needs data the gateway does
not have (team scope of a stored request, "nobody approves their own request", the
class's approval rule for requester reconciles).
"""

from __future__ import annotations

from enum import StrEnum

from contracts.roles import Role

# Most privileged first: when a token carries several roles, the first one found here wins.
ROLES_BY_PRIVILEGE: tuple[Role, ...] = (Role.ADMIN, Role.APPROVER, Role.REQUESTER, Role.VIEWER)


class Action(StrEnum):
    READ = "read"
    CREATE_REQUEST = "create_request"
    EXTEND_REQUEST = "extend_request"
    DELETE_REQUEST = "delete_request"
    APPROVE_REQUEST = "approve_request"
    REJECT_REQUEST = "reject_request"
    RECONCILE_REQUEST = "reconcile_request"
    UPSERT_CLASS = "upsert_class"
    SET_TEAM_BUDGET = "set_team_budget"
    MANAGE_POLICY = "manage_policy"
    OPERATE_EVENTS = "operate_events"


# For error messages: "the viewer role cannot <phrase>".
ACTION_PHRASES: dict[Action, str] = {
    Action.READ: "read",
    Action.CREATE_REQUEST: "create environment requests",
    Action.EXTEND_REQUEST: "extend environment requests",
    Action.DELETE_REQUEST: "delete environment requests",
    Action.APPROVE_REQUEST: "approve environment requests",
    Action.REJECT_REQUEST: "reject environment requests",
    Action.RECONCILE_REQUEST: "reconcile environment requests",
    Action.UPSERT_CLASS: "change environment classes",
    Action.SET_TEAM_BUDGET: "set team budgets",
    Action.MANAGE_POLICY: "change quota profiles or policy packs",
    Action.OPERATE_EVENTS: "replay events or manage dead letters",
}

_EVERYONE = frozenset(Role)

PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.READ: _EVERYONE,
    Action.CREATE_REQUEST: frozenset({Role.REQUESTER, Role.ADMIN}),
    # Requesters only for their own teams: the owning service compares the stored team.
    Action.EXTEND_REQUEST: frozenset({Role.REQUESTER, Role.ADMIN}),
    Action.DELETE_REQUEST: frozenset({Role.REQUESTER, Role.ADMIN}),
    Action.APPROVE_REQUEST: frozenset({Role.APPROVER, Role.ADMIN}),
    Action.REJECT_REQUEST: frozenset({Role.APPROVER, Role.ADMIN}),
    # Requesters may reconcile their own team's requests in classes without approval; the
    # service knows the class and the team, so it narrows this further.
    Action.RECONCILE_REQUEST: frozenset({Role.REQUESTER, Role.APPROVER, Role.ADMIN}),
    Action.UPSERT_CLASS: frozenset({Role.ADMIN}),
    Action.SET_TEAM_BUDGET: frozenset({Role.ADMIN}),
    Action.MANAGE_POLICY: frozenset({Role.ADMIN}),
    Action.OPERATE_EVENTS: frozenset({Role.ADMIN}),
}


def is_allowed(role: Role, action: Action) -> bool:
    return role in PERMISSIONS[action]


def allowed_roles(action: Action) -> list[Role]:
    """The roles that may perform ``action``, most privileged first (for error messages and docs)."""
    return [role for role in ROLES_BY_PRIVILEGE if role in PERMISSIONS[action]]


def who_can(roles: list[Role]) -> str:
    """``[admin, approver]`` -> "approvers and admins can": the end of a refusal, for people."""
    plurals = [f"{role.value}s" for role in reversed(roles)]  # least privileged first, as people list them
    if len(plurals) == 1:
        return f"only {plurals[0]} can"
    return f"{', '.join(plurals[:-1])} and {plurals[-1]} can"


def most_privileged(candidates: list[str]) -> Role | None:
    """The most privileged valid role among ``candidates``; unknown names are ignored.

    Names match exactly (``admin``, not ``ADMIN`` or `` admin``): a role is a grant, and an
    identity provider whose group ``ADMIN`` is someone else's must not grant it by accident."""
    valid = set(candidates)
    return next((role for role in ROLES_BY_PRIVILEGE if role.value in valid), None)


def lacks_team_scope(role: Role, teams: list[str] | None, *, enforced: bool) -> bool:
    """True when team scoping is enforced and a non-admin token carries no teams claim.

    Such a token is scoped to no team at all, so it may not read or act on requests. Admins
    are never scoped (they do everything); tokens with a teams claim are scoped to those
    teams by the owning service, whether or not scoping is enforced.
    """
    return enforced and role is not Role.ADMIN and teams is None
