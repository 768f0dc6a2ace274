"""platformctl commands for the policy catalog, team budgets and dry-run plans.

    platformctl classes apply -f classes.yaml          # one class, a list, or several documents
    platformctl quota-profiles apply -f profiles.yaml
    platformctl policy-packs get --name cost-guardrails -o yaml > pack.yaml
    platformctl teams set-budget --team payments --monthly-usd 5000
    platformctl teams get --team payments
    platformctl request create ... --dry-run             # the plan, nothing stored

Each function takes the parsed arguments and a :class:`~services.tools.platformctl.context.Context`
and returns the exit code; failures raise :class:`CliError`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from services.tools.platformctl.client import CliError, Reply, UsageError
from services.tools.platformctl.context import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Context
from services.tools.platformctl.files import load_documents
from services.tools.platformctl.output import CLASS_COLUMNS, Column, emit

CLASSES = "/v1/environment-classes"
QUOTA_PROFILES = "/v1/quota-profiles"
POLICY_PACKS = "/v1/policy-packs"
TEAMS = "/v1/teams"

PROFILE_COLUMNS: list[Column] = [
    ("NAME", lambda p: p.get("name")),
    ("RESOURCES", lambda p: len(p.get("resource_quota") or {})),
    ("DESCRIPTION", lambda p: p.get("description")),
]
PACK_COLUMNS: list[Column] = [
    ("NAME", lambda p: p.get("name")),
    ("RULES", lambda p: ",".join(str(rule.get("type")) for rule in p.get("rules") or [])),
    ("MANIFESTS", lambda p: len(p.get("manifests") or [])),
    ("DESCRIPTION", lambda p: p.get("description")),
]


def _path(collection: str, name: str) -> str:
    # Quoted so a name can never turn into another route ("../teams").
    return f"{collection}/{quote(name, safe='')}"


# -- apply ---------------------------------------------------------------------------------------


def read_documents(source: str) -> list[dict[str, Any]]:
    """The objects in ``source`` (a path, or ``-`` for stdin): YAML or JSON, one object, a list
    of objects, or several YAML documents."""
    loaded = load_documents(source)
    documents: list[Any] = []
    for document in loaded:
        documents.extend(document if isinstance(document, list) else [document])
    if not documents:
        raise CliError(f"-f {source}: no objects found", exit_code=EXIT_USAGE)
    for index, document in enumerate(documents):
        if not isinstance(document, dict) or not isinstance(document.get("name"), str):
            raise CliError(f"-f {source}: object {index + 1} needs a string 'name'", exit_code=EXIT_USAGE)
    return documents


def apply_documents(args: argparse.Namespace, ctx: Context, collection: str, what: str) -> int:
    """PUT every object of ``args.file`` to ``collection/<name>``; stops at the first refusal.

    A PUT replaces the whole object: a field the file leaves out gets its default, not the
    value it had. So that this never happens unnoticed, every field it changed that way is
    named on stderr (the stored objects, as the API returns them, go to stdout).
    """
    applied = []
    for document in read_documents(args.file):
        name = document["name"]
        body = {key: value for key, value in document.items() if key != "name"}
        before, etag = _current(ctx, _path(collection, name))
        # Only over what was just read: a change someone made in between is a refusal (409)
        # naming it, not silently replaced (nor reported as "back to the default").
        conditional = {"If-Match": etag} if etag else None
        reply = ctx.api.request("PUT", _path(collection, name), json_body=body, headers=conditional)
        ctx.note(f"{what} {name} {change_of(reply)}")
        reset = reset_by_omission(before, body, reply.body)
        if reset:
            ctx.note(
                f"  not in the file, so back to the default (a PUT replaces the whole {what}): "
                + "; ".join(f"{field} {_shown(old)} -> {_shown(new)}" for field, old, new in reset)
            )
        applied.append(reply.body)
    emit(ctx.stdout, {"items": applied}, ctx.output, COLUMNS_BY_COLLECTION.get(collection))
    return EXIT_OK


# The gateway names what each PUT did (created, replaced or unchanged); 201 is "created" even
# from a gateway that does not send the header yet, and any other answer without it "configured".
CHANGE_HEADER = "X-Platform-Change"
CHANGES = {"created": "created", "replaced": "configured", "unchanged": "unchanged"}


def change_of(reply: Reply) -> str:
    """``created``, ``configured`` or ``unchanged`` (kubectl's words) for an applied document."""
    said = CHANGES.get(reply.headers.get(CHANGE_HEADER, ""))
    return said or ("created" if reply.status == 201 else "configured")


def _current(ctx: Context, path: str) -> tuple[dict[str, Any] | None, str | None]:
    """The object as stored now and its ETag, or (None, None) if there is none yet."""
    try:
        reply = ctx.api.request("GET", path)
    except CliError as exc:
        if exc.status == 404:
            return None, None
        raise
    current = reply.body if isinstance(reply.body, dict) else None
    return current, reply.headers.get("ETag") if current is not None else None


def reset_by_omission(
    before: dict[str, Any] | None, sent: dict[str, Any], stored: Any
) -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` for each field ``sent`` left out whose stored value
    changed: what an admin who expected a merge (not a replace) would lose."""
    if before is None or not isinstance(stored, dict):
        return []
    return [
        (field, before.get(field), value)
        for field, value in stored.items()
        if field != "name" and field not in sent and before.get(field) != value
    ]


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def classes_apply(args: argparse.Namespace, ctx: Context) -> int:
    return apply_documents(args, ctx, CLASSES, "environment class")


def quota_profiles_apply(args: argparse.Namespace, ctx: Context) -> int:
    return apply_documents(args, ctx, QUOTA_PROFILES, "quota profile")


def policy_packs_apply(args: argparse.Namespace, ctx: Context) -> int:
    return apply_documents(args, ctx, POLICY_PACKS, "policy pack")


# -- read ----------------------------------------------------------------------------------------


def quota_profiles_list(_: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(QUOTA_PROFILES), ctx.output, PROFILE_COLUMNS)
    return EXIT_OK


def quota_profiles_get(args: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(_path(QUOTA_PROFILES, args.name)), ctx.output)
    return EXIT_OK


def policy_packs_list(_: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(POLICY_PACKS), ctx.output, PACK_COLUMNS)
    return EXIT_OK


def policy_packs_get(args: argparse.Namespace, ctx: Context) -> int:
    emit(ctx.stdout, ctx.api.get(_path(POLICY_PACKS, args.name)), ctx.output)
    return EXIT_OK


# -- teams ---------------------------------------------------------------------------------------


def _money(value: Any) -> str:
    return "none" if value is None else f"${float(value):,.2f}"


def show_team(team: dict[str, Any], ctx: Context) -> None:
    if ctx.output != "table":
        emit(ctx.stdout, team, ctx.output)
        return
    budget = team.get("monthly_budget_usd")
    if budget is None:
        budget_text = "not set (no limit)"
    elif team.get("budget_source") == "default":
        budget_text = f"{_money(budget)} / month (the default: the team has no budget of its own)"
    else:
        budget_text = f"{_money(budget)} / month"
    lines = [
        f"team:      {team.get('team')}",
        f"budget:    {budget_text}",
        f"spend:     {_money(team.get('spend_usd'))} / month (active environments)",
    ]
    if budget is not None:
        lines.append(f"remaining: {_money(team.get('remaining_usd'))}")
    environments = team.get("active_environments") or []
    if environments:
        lines.append("environments:")
        lines += [
            f"  {env.get('request_id')}  {env.get('class')}  {_money(env.get('estimated_monthly_cost_usd'))}"
            for env in environments
        ]
    ctx.stdout.write("\n".join(lines) + "\n")


def teams_get(args: argparse.Namespace, ctx: Context) -> int:
    show_team(ctx.api.get(_path(TEAMS, args.team)), ctx)
    return EXIT_OK


def teams_set_budget(args: argparse.Namespace, ctx: Context) -> int:
    if args.clear == (args.monthly_usd is not None):
        raise UsageError("pass either --monthly-usd N or --clear")
    monthly_usd = None if args.clear else args.monthly_usd
    reply = ctx.api.request(
        "PUT", f"{_path(TEAMS, args.team)}/budget", json_body={"monthly_usd": monthly_usd}
    )
    show_team(reply.body, ctx)
    return EXIT_OK


# -- dry-run plans -------------------------------------------------------------------------------


def show_plan(plan: dict[str, Any], ctx: Context) -> int:
    """``request create --dry-run``: the whole plan as JSON/YAML, or a summary and the exact
    manifests on a terminal.

    Exits 1 when the request would not get through (rejected by policy, or manifests that
    cannot be rendered), so a pipeline can gate on the dry run; the plan is printed either way.
    """
    if ctx.output != "table":
        emit(ctx.stdout, plan, ctx.output)
    else:
        _summarise(plan, ctx)
    decision = plan.get("decision") or {}
    if decision.get("outcome") == "rejected":
        reasons = "; ".join(
            str(r.get("message")) for r in decision.get("reasons") or [] if r.get("effect") == "deny"
        )
        ctx.note(f"platformctl: the request would be rejected: {reasons or 'see the plan'}")
        return EXIT_FAILED
    if plan.get("render_error"):
        ctx.note(f"platformctl: the manifests cannot be rendered: {plan['render_error']}")
        return EXIT_FAILED
    return EXIT_OK


def _summarise(plan: dict[str, Any], ctx: Context) -> None:
    decision = plan.get("decision") or {}
    details = plan.get("plan") or {}
    budget = plan.get("budget") or {}
    request_id = plan.get("request_id")
    placeholder = (
        " (placeholder id: pass --idempotency-key for the real one)" if plan.get("placeholder_id") else ""
    )
    lines = [
        f"dry run: nothing was stored{placeholder}",
        f"request:   {request_id}",
        f"decision:  {decision.get('outcome')}",
    ]
    lines += [
        f"  - [{reason.get('effect')}] {reason.get('code')}"
        f"{' (' + str(reason['pack']) + ')' if reason.get('pack') else ''}: {reason.get('message')}"
        for reason in decision.get("reasons") or []
    ]
    lines.append(
        f"approvals: {decision.get('approvals_required', 0)} required"
        if decision.get("requires_approval")
        else "approvals: none"
    )
    if details:
        quota = ", ".join(f"{key}={value}" for key, value in (details.get("resource_quota") or {}).items())
        lines += [
            f"quota:     {details.get('quota_profile')} ({quota})",
            f"packs:     {', '.join(details.get('policy_packs') or [])}",
        ]
    lines.append(f"cost:      {_money(budget.get('request_cost_usd'))} / month; {_budget_line(budget)}")
    manifests = plan.get("manifests")
    if manifests:
        lines.append(f"manifests: {manifests.get('gitops_path')}/ (digest {manifests.get('digest')})")
    elif plan.get("render_error"):
        lines.append(f"manifests: cannot be rendered: {plan['render_error']}")
    else:
        lines.append("manifests: none (the request would be rejected)")
    ctx.stdout.write("\n".join(lines) + "\n")
    for file in (manifests or {}).get("files") or []:
        ctx.stdout.write(f"---\n# {file.get('name')}\n{file.get('content')}")
    ctx.stdout.flush()


def _budget_line(budget: dict[str, Any]) -> str:
    """The team's spend with this request, against its budget if it has one."""
    team = budget.get("team")
    spend = f"{_money(budget.get('active_spend_usd'))} active -> {_money(budget.get('projected_spend_usd'))}"
    if budget.get("monthly_budget_usd") is None:
        return f"team {team} has no budget set ({spend}, no limit)"
    exceeded = ", over budget" if budget.get("exceeded") else ""
    return f"team {team}: {spend} of {_money(budget['monthly_budget_usd'])}{exceeded}"


COLUMNS_BY_COLLECTION: dict[str, list[Column]] = {
    CLASSES: CLASS_COLUMNS,
    QUOTA_PROFILES: PROFILE_COLUMNS,
    POLICY_PACKS: PACK_COLUMNS,
}
