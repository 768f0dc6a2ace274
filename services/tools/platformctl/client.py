"""The HTTP API as platformctl sees it: JSON in, JSON out, every failure a one-line message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from services.tools.platformctl.exit_codes import EXIT_API, EXIT_AUTH, EXIT_USAGE


class CliError(Exception):
    """A failure to report as ``platformctl: <message>``; ``status`` is the HTTP status if any.

    Its exit code follows the table in :mod:`exit_codes`: 4 for 401/403, else 3 (the API or
    the network), unless the raiser names another one: ``EXIT_USAGE`` for a local file or
    setting that cannot be used, ``EXIT_AUTH`` for a sign-in that was refused or expired.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        *,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self._exit_code = exit_code

    @property
    def exit_code(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        return EXIT_AUTH if self.status in (401, 403) else EXIT_API

    @property
    def transient(self) -> bool:
        """Worth retrying while waiting: the API or a service behind it is briefly unavailable."""
        return self.status is None or self.status in (502, 503, 504)


class UsageError(CliError):
    """The command cannot run as typed: a flag or its value is missing or invalid (or the
    ``PLATFORM_*`` variable standing in for a flag). Raised before anything is sent to the
    API; platformctl exits 2 for it, like argparse does for the flags it checks itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=EXIT_USAGE)


def redact(url: str) -> str:
    """``url`` without user info, so a token or password in it never reaches the terminal."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def describe_details(details: Any) -> str:
    """``[{"field": "team", "message": "..."}]`` -> ``team: ...; region: ...``.

    Only field problems are shown: details of any other shape (``{"role": ..., "allowed_roles":
    [...]}``) are data for scripts, and the error's message already says the same for people.
    """
    if not isinstance(details, list):
        return ""
    parts = []
    for item in details:
        if isinstance(item, dict) and isinstance(item.get("message"), str):
            field = item.get("field")
            parts.append(f"{field}: {item['message']}" if field else item["message"])
    return "; ".join(parts)


def error_message(message: str, details: Any) -> str:
    """The API's message with the field problems of ``details`` that it does not already say.

    A validation error's message names the failing fields (``invalid environment request:
    class, region``) and its details say what is wrong with each; shown together they would
    name each field twice, so the details take the place of that list of names
    (``invalid environment request: class: unknown environment class 'gold' ...``).
    """
    problems = [
        item
        for item in (details if isinstance(details, list) else [])
        if isinstance(item, dict) and isinstance(item.get("message"), str)
    ]
    described = describe_details([item for item in problems if item["message"] not in message])
    if not described:
        return message
    fields = ", ".join(dict.fromkeys(str(item.get("field")) for item in problems))
    if fields and message.endswith(f": {fields}"):
        return f"{message[: -len(fields)]}{described}"
    return f"{message}; {described}"


def error_from_response(response: httpx.Response) -> CliError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message = error_message(body["error"], body.get("details"))
        code = body.get("code") if isinstance(body.get("code"), str) else None
        return CliError(f"{message} (HTTP {response.status_code})", response.status_code, code)
    return CliError(f"the API answered HTTP {response.status_code}", response.status_code)


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    body: Any


TokenSource = Callable[[], str | None]
"""Where a token comes from when it is needed: a ``login`` token is refreshed only then."""


class ApiClient:
    def __init__(self, base_url: str, token: str | TokenSource | None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def bearer(self) -> str:
        """The token to send; a usage error when there is none."""
        token = self._token() if callable(self._token) else self._token
        if not token:
            raise UsageError(
                "no token: run 'platformctl login', pass --token or set PLATFORM_TOKEN "
                "('platformctl token mint' makes a development one)"
            )
        self._token = token  # a login token is read, and refreshed, once per command
        return token

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        authenticated: bool = True,
    ) -> Reply:
        """Send one request (with the bearer token unless ``authenticated`` is false: the
        public sign-in settings); raises :class:`CliError` for transport failures and error
        statuses."""
        auth = {"Authorization": f"Bearer {self.bearer()}"} if authenticated else {}
        sent_headers = {
            **auth,
            "Accept": "application/json",
            **(headers or {}),
        }
        query = {key: value for key, value in (params or {}).items() if value is not None}
        where = redact(self.base_url)
        try:
            response = httpx.request(
                method,
                f"{self.base_url}{path}",
                params=query,
                json=json_body,
                headers=sent_headers,
                timeout=self.timeout,
            )
        except httpx.ConnectError:
            raise CliError(f"cannot reach the API at {where}") from None
        except httpx.TimeoutException:
            raise CliError(f"the API at {where} did not answer within {self.timeout:g}s") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise CliError(f"invalid API URL {where!r} (expected http:// or https://)") from None
        except httpx.HTTPError as exc:
            raise CliError(f"the request to the API at {where} failed ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            body = response.json() if response.content else None
        except ValueError:
            raise CliError(f"the API at {where} sent a reply that is not JSON") from None
        return Reply(response.status_code, response.headers, body)

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).body

    def get_public(self, path: str) -> Any:
        return self.request("GET", path, authenticated=False).body
