"""What the platform accepts as a git revision and as the endpoint of a git URL: one rule each,
shared by the request model (:mod:`contracts.inputs`) and the renderer, which writes both
into manifests that Argo CD and git act on.

- A revision is a branch, tag or commit id in the safe subset of ``git check-ref-format``:
  ASCII letters, digits and ``. _ + - /``, components separated by single ``/``, no
  component starting or ending with ``.`` or ending in ``.lock``, no ``..``, no leading
  ``-`` (git would read it as an option). Shell characters (``$``, backticks, ``;``,
  ``|``), spaces, control and format characters (bidi overrides, BOM, U+0085) never pass,
  although git itself would take some of them.
- A git URL's user and host never start with ``-`` (``ssh -oProxyCommand=...`` runs a
  command) and its port is 1-65535.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# One ref component: dot-separated runs, so no leading, trailing or doubled dot.
_COMPONENT = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
REVISION_PATTERN = rf"^[A-Za-z0-9_+][A-Za-z0-9_+-]*(?:\.[A-Za-z0-9_+-]+)*(?:/{_COMPONENT})*$"
"""The revision rule as a JSON Schema pattern (no look-around: pydantic's regex engine has none)."""
REVISION = re.compile(REVISION_PATTERN)
REVISION_RULE = (
    "must be a git branch, tag or commit: ASCII letters, digits, '.', '_', '+', '-' and '/' "
    "(not starting with '-', '.' or '/'; no '..' or '//'; no component starting or ending with '.' "
    "or ending in '.lock')"
)

MAX_PORT = 65535
# scp-like "user@host:path" (git's own short form for ssh).
_SCP_LIKE = re.compile(r"(?P<user>[^@/:]+)@(?P<host>[^@/:]+):")


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a branch, tag or commit the platform renders, or None."""
    if REVISION.fullmatch(revision) is None or any(part.endswith(".lock") for part in revision.split("/")):
        return REVISION_RULE
    return None


def url_endpoint_problem(url: str) -> str | None:
    """Why the user, host or port of git URL ``url`` (``https://``, ``ssh://`` or scp-like)
    is unsafe, or None. Says nothing about the rest of the URL."""
    if "://" in url:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a port that is not a number, or above 65535
            return f"must have a port between 1 and {MAX_PORT}"
        user, host = parts.username, parts.hostname
        if port == 0:
            return f"must have a port between 1 and {MAX_PORT}"
    else:
        scp = _SCP_LIKE.match(url)
        user, host = (scp["user"], scp["host"]) if scp else (None, None)
    if (user or "").startswith("-") or (host or "").startswith("-"):
        return "must not have a user or host starting with '-'"
    return None
