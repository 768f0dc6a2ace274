"""The tokens ``login`` got, one file per context (``tokens/<context>.json`` beside the config
file, 0600 in a 0700 directory of the user's own, in a 0700 config directory), refreshed
when they are about to expire.

A session remembers the provider endpoints it needs (token, revocation), so a refresh or a
``logout`` works without asking the API or the provider's discovery document again.

Several platformctl processes may share a session (a script running commands in
parallel). Providers that rotate refresh tokens accept each one once, and many end the
whole session when one is used twice, so a refresh happens under an exclusive lock on
``tokens/<context>.json.lock``: the process that waited for it finds the session already
refreshed and uses that token.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from services.tools.platformctl.client import CliError
from services.tools.platformctl.config_file import CliConfig, private_directory, same_api, write_private
from services.tools.platformctl.exit_codes import EXIT_AUTH, EXIT_USAGE
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


def token_directory(config: CliConfig) -> Path:
    """The tokens directory, checked (see :func:`private_directory`) and closed to others
    (0700), and so is the config file's directory that holds it."""
    private_directory(config.path.parent)
    return private_directory(config.tokens_dir)


def lock_path(config: CliConfig, context: str) -> Path:
    return config.tokens_dir / f"{context}.json.lock"


@contextlib.contextmanager
def session_lock(config: CliConfig, context: str) -> Iterator[None]:
    """Hold the context's session lock (waiting for another process that holds it)."""
    token_directory(config)
    path = lock_path(config, context)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CliError(
            f"{path}: cannot open the lock file ({exc.strerror or 'not allowed'})", exit_code=EXIT_USAGE
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def save_session(config: CliConfig, context: str, session: Session) -> None:
    token_directory(config)
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
        raise CliError(
            f"{path}: unreadable; run 'platformctl login --context {context}' again", exit_code=EXIT_AUTH
        ) from None


def remove_session(config: CliConfig, context: str) -> Session | None:
    """Delete the context's tokens; returns what was stored (None if nothing was)."""
    if not session_path(config, context).exists():
        return None
    # Under the lock, so that a refresh under way cannot write the session back afterwards.
    with session_lock(config, context):
        session = None
        with contextlib.suppress(CliError):
            session = load_session(config, context)
        for path in (session_path(config, context), lock_path(config, context)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return session


def current_token(config: CliConfig, context: str, api: str) -> str | None:
    """The context's token for ``api``, refreshed first when it expires within the skew;
    None when the context has no sign-in for that API (it was pointed elsewhere since). An
    expired session that cannot be refreshed is an error that says how to sign in again."""
    session = _session_for(config, context, api)
    if session is not None and session.expiring(time.time()):
        with session_lock(config, context):
            # Another process may have refreshed it (or signed out) while this one waited.
            session = _session_for(config, context, api)
            if session is not None and session.expiring(time.time()):
                session = _refreshed(config, context, session)
    return session.token if session else None


def _session_for(config: CliConfig, context: str, api: str) -> Session | None:
    session = load_session(config, context)
    return session if session is not None and same_api(session.api, api) else None


def _refreshed(config: CliConfig, context: str, session: Session) -> Session:
    again = f"the sign-in to {context} has expired; run 'platformctl login --context {context}'"
    if not session.refresh_token:
        raise CliError(again, exit_code=EXIT_AUTH)
    try:
        session = session.refreshed(refresh(session.provider, session.refresh_token))
    except TokenError as exc:
        if exc.error == "invalid_grant":
            raise CliError(again, exit_code=EXIT_AUTH) from None
        raise
    save_session(config, context, session)
    return session
