"""Git URLs that may be written into the GitOps repository: never one carrying credentials,
nor one whose user or host git would pass to ssh as an option or whose port is out of range
(the rule the request model applies too: :func:`contracts.git_names.url_endpoint_problem`).

Rendered files are committed and read by everyone with access to the GitOps repository,
so an ``https://user:token@host`` URL there would publish the token. SSH user names
(``git@host:org/repo.git``, ``ssh://git@host/...``) identify an account, not a secret.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from contracts.git_names import url_endpoint_problem

MAX_URL_LENGTH = 2048


def url_problem(url: str) -> str | None:
    """Why ``url`` must not be rendered (without echoing it), or None."""
    if not url.strip():
        return "must not be empty"
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    endpoint = url_endpoint_problem(url)
    if endpoint is not None:
        return endpoint
    if "://" not in url:
        return None  # scp-like "user@host:path" or a local path: no place for a password
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if parts.password is not None:
        return "must not contain credentials"
    if parts.scheme in {"http", "https"} and parts.username is not None:
        # Tokens are commonly passed as the user name of an HTTPS URL.
        return "must not contain credentials"
    return None
