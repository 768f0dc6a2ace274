"""Where an environment lives, as a pure function of the request (SPEC.md "Rendered GitOps layout").

The renderer decides these names when it renders; intake needs the same names to ask for a
teardown of a request whose render it has not heard about yet (deleted while queued), so
that the teardown still removes the right directory and namespace instead of nothing.
Both use these functions; the renderer's ``layout`` module re-checks every segment
before it writes anything.
"""

from __future__ import annotations

NAMESPACE_MAX_LENGTH = 63
# Kept from the request id so two requests of one team and app never share a namespace.
NAMESPACE_SUFFIX_LENGTH = 8


def gitops_path(region: str, team: str, app: str, request_id: str) -> str:
    """``clusters/<region>/teams/<team>/<app>/<request-id>``, relative to the repository root."""
    return f"clusters/{region}/teams/{team}/{app}/{request_id}"


def namespace_name(team: str, app: str, request_id: str) -> str:
    """``<team>-<app>-<last 8 of id>``; a long ``<team>-<app>`` is cut, the suffix always stays."""
    suffix = "-" + request_id[-NAMESPACE_SUFFIX_LENGTH:]
    prefix = f"{team}-{app}"[: NAMESPACE_MAX_LENGTH - len(suffix)].rstrip("-")
    return prefix + suffix
