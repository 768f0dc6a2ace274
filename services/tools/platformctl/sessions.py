"""The tokens ``login`` got, one file per context (``tokens/<context>.json`` beside the config
file, 0600 in a 0700 directory), refreshed when they are about to expire.

A session remembers the provider endpoints it needs (token, revocation), so a refresh or a
``logout`` works without asking the API or the provider's discovery document again.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from services.tools.platformctl.client import CliError
from services.tools.platformctl.config_file import CliConfig, private_directory, same_api, write_private
from services.tools.platformctl.oidc import Provider, TokenError, bearer_token, refresh

# Refreshed this long before it expires, so a token does not run out between the check and
# the API reading it (a slow network, a clock a little behind).
REFRESH_SKEW_SECONDS = 30.0


@dataclass
class Session:
    api: str
    provider: Provider
    token: str
    expires_at: float | None
    refresh_token: str | None = None

    @classmethod
    def signed_in(cls, api: str, provider: Provider, answer: dict[str, Any]) -> Session:
        """The session a token response starts."""
        token, expires_at = bearer_token(answer, provider.audience, time.time())
        return cls(api, provider, token, expires_at, answer.get("refresh_token"))

    def expiring(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - REFRESH_SKEW_SECONDS <= now

    def refreshed(self, answer: dict[str, Any]) -> Session:
        token, expires_at = bearer_token(answer, self.provider.audience, time.time())
        # Providers that rotate refresh tokens send a new one; the others keep the old valid.
        return Session(
            self.api, self.provider, token, expires_at, answer.get("refresh_token") or self.refresh_token
        )


def session_path(config: CliConfig, context: str) -> Path:
    return config.tokens_dir / f"{context}.json"


def save_session(config: CliConfig, context: str, session: Session) -> None:
    private_directory(config.tokens_dir)
    write_private(session_path(config, context), json.dumps(asdict(session), indent=2) + "\n")


def load_session(config: CliConfig, context: str) -> Session | None:
    path = session_path(config, context)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        provider = Provider(**{f.name: stored["provider"].get(f.name) for f in fields(Provider)})
        return Session(
            api=stored["api"],
            provider=provider,
            token=stored["token"],
            expires_at=stored.get("expires_at"),
            refresh_token=stored.get("refresh_token"),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CliError(f"{path}: unreadable; run 'platformctl login --context {context}' again") from None


def remove_session(config: CliConfig, context: str) -> Session | None:
    """Delete the context's tokens; returns what was stored (None if nothing was)."""
    session = None
    with contextlib.suppress(CliError):
        session = load_session(config, context)
    with contextlib.suppress(FileNotFoundError):
        session_path(config, context).unlink()
        return session
    return None


def current_token(config: CliConfig, context: str, api: str) -> str | None:
    """The context's token for ``api``, refreshed first when it expires within the skew;
    None when the context has no sign-in for that API (it was pointed elsewhere since). An
    expired session that cannot be refreshed is an error that says how to sign in again."""
    session = load_session(config, context)
    if session is None or not same_api(session.api, api):
        return None
    if not session.expiring(time.time()):
        return session.token
    again = f"the sign-in to {context} has expired; run 'platformctl login --context {context}'"
    if not session.refresh_token:
        raise CliError(again)
    try:
        session = session.refreshed(refresh(session.provider, session.refresh_token))
    except TokenError as exc:
        if exc.error == "invalid_grant":
            raise CliError(again) from None
        raise
    save_session(config, context, session)
    return session.token
