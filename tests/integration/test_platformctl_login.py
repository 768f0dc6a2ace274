"""``platformctl login``, contexts and the token cache, against real gateways that trust a
real OIDC provider on loopback (tests/support/oidc_provider.py).

The gateways take no development tokens (OIDC only) unless a test says otherwise, so a
command that works proves it sent the provider's token; platformctl runs as the installed
console script with its own config file in the test's directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from libs.embedded import free_port
from tests.support.gateway import GatewayStack, gateway_stack, mint
from tests.support.isolation import Isolation
from tests.support.oidc_provider import Provider, oidc_provider
from tests.support.platformctl import Result, clean_env, platformctl, scripted_browser, started_platformctl

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OLIVIA = {"sub": "u-42", "email": "olivia@example.com", "role": "requester", "teams": ["payments"]}
BOB = {"sub": "u-7", "email": "bob@example.com", "role": "approver", "teams": ["search"]}


def signing_in_env(provider: Provider, **extra: str) -> dict[str, str]:
    """A gateway that trusts ``provider`` only and names the public client to sign in as."""
    return {
        "PLATFORM_OIDC_ISSUER_URL": provider.issuer,
        "PLATFORM_OIDC_AUDIENCE": "platform",
        "PLATFORM_OIDC_CLIENT_ID": provider.client_id,
        "PLATFORM_JWT_HS256_SECRET": "",
        **extra,
    }


@pytest.fixture(scope="module")
async def module_provider() -> AsyncIterator[Provider]:
    async with oidc_provider() as running:
        yield running


@pytest.fixture(scope="module")
async def module_gateway(nats_url: str, module_provider: Provider) -> AsyncIterator[GatewayStack]:
    """One gateway for the module: it keeps nothing of a sign-in (each test has its own
    config and token cache), and it trusts the module's provider only."""
    rpc_prefix = Isolation.new().rpc_prefix
    async with gateway_stack(nats_url, rpc_prefix, **signing_in_env(module_provider)) as running:
        yield running


@pytest.fixture
def provider(module_provider: Provider) -> Provider:
    """The module's provider as a new one starts: no sign-ins, grants, tokens or settings of
    an earlier test (its keys and address stay, as the gateway knows them)."""
    fresh = Provider(issuer=module_provider.issuer, keys=module_provider.keys, user=dict(OLIVIA))
    for field in dataclasses.fields(Provider):
        setattr(module_provider, field.name, getattr(fresh, field.name))
    return module_provider


@pytest.fixture
def gateway(module_gateway: GatewayStack, provider: Provider) -> GatewayStack:
    return module_gateway


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "platformctl" / "config.yaml"


@pytest.fixture
def env(config_file: Path, tmp_path: Path) -> dict[str, str]:
    return clean_env(PLATFORMCTL_CONFIG=str(config_file), BROWSER=str(scripted_browser(tmp_path)))


def stored(path: Path) -> Any:
    """A file platformctl wrote (YAML, or JSON, which YAML reads too)."""
    return yaml.safe_load(path.read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def context_of(stack: GatewayStack) -> str:
    """The name login gives the context of a gateway: its host and port."""
    parts = urlsplit(stack.base_url)
    return f"{parts.hostname}:{parts.port}"


async def device_login(env: dict[str, str], *args: str, consent: str = "approve") -> Result:
    """``platformctl login`` with the device code: the user opens the URL it shows and
    signs in (or, with ``consent="deny"``, refuses)."""
    async with started_platformctl("login", *args, env=env) as running:
        shown = await running.stderr_line("(or open ")
        url = shown.split("(or open ", 1)[1].removesuffix(")")
        async with httpx.AsyncClient() as browser:
            answered = await browser.get(f"{url}&consent={consent}")
        assert answered.status_code == 200, answered.text
        return await running.finish()


async def test_the_gateway_publishes_how_to_sign_in(gateway: GatewayStack, provider: Provider) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        response = await http.get("/v1/auth/config")  # no token
    assert response.status_code == 200, response.text
    assert response.json() == {
        "issuer": provider.issuer,
        "audience": "platform",
        "client_id": "platformctl",
        "strict_production": False,
        "development_tokens": False,
    }


async def test_device_login_then_commands_use_the_cached_token(
    gateway: GatewayStack, provider: Provider, env: dict[str, str], config_file: Path
) -> None:
    result = await device_login(env, "--api", gateway.base_url)
    assert result.code == 0, result.stderr
    name = context_of(gateway)
    assert "enter the code" in result.stderr
    assert (
        f"Signed in to {name} ({gateway.base_url}) as olivia@example.com (role requester, teams payments)"
        in (result.stderr)
    )
    assert provider.grants == [DEVICE_GRANT]
    # No --api, no token: the context login made current, and its token.
    classes = await platformctl("classes", env=env)
    assert classes.code == 0, classes.stderr
    assert {item["name"] for item in classes.json()["items"]} == {"preview", "shared-staging"}
    whoami = await platformctl("whoami", env=env)
    shown = whoami.json()
    expires_in = datetime.fromisoformat(shown.pop("expires_at")).timestamp() - time.time()
    assert 500 < expires_in <= 600  # the provider's access tokens live 600 s
    assert shown == {
        "actor": "olivia@example.com",
        "role": "requester",
        "teams": ["payments"],
        "subject": "u-42",
    }
    assert stored(config_file) == {
        "current-context": name,
        "contexts": {name: {"api": gateway.base_url, "issuer": provider.issuer}},
    }


async def test_the_token_cache_is_readable_by_its_owner_only(
    gateway: GatewayStack, env: dict[str, str], config_file: Path
) -> None:
    tokens = config_file.parent / "tokens"
    tokens.mkdir(parents=True, mode=0o755)  # there already, and too open, as is the config's
    tokens.chmod(0o755)
    config_file.parent.chmod(0o755)
    assert (await device_login(env, "--api", gateway.base_url, "--context", "dev")).code == 0
    assert mode(tokens) == 0o700
    assert mode(config_file.parent) == 0o700
    assert mode(tokens / "dev.json") == 0o600
    assert mode(config_file) == 0o600
    assert names_in(tokens) == ["dev.json"]  # no partial files left


async def test_tokens_are_never_written_through_a_link_or_into_someone_elses_directory(
    gateway: GatewayStack, provider: Provider, env: dict[str, str], config_file: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config_file.parent.mkdir()
    (config_file.parent / "tokens").symlink_to(elsewhere)
    linked = await platformctl("login", "--api", gateway.base_url, "--context", "dev", env=env)
    assert (linked.code, linked.stderr) == (
        2,
        f"platformctl: {config_file.parent / 'tokens'}: is a symbolic link; "
        "platformctl keeps its config and tokens only in a directory of your own\n",
    )
    assert provider.grants == []  # refused before anyone signed in
    assert names_in(elsewhere) == []
    theirs = someone_elses_directory(tmp_path)
    foreign = await platformctl(
        "config",
        "set-context",
        "dev",
        "--api",
        gateway.base_url,
        env={**env, "PLATFORMCTL_CONFIG": f"{theirs}/config.yaml"},
    )
    assert foreign.code == 2  # platformctl's own config is unusable: nothing was sent
    assert foreign.stderr.startswith(f"platformctl: {theirs}: belongs to another user (uid ")
    assert not (theirs / "config.yaml").exists()


def someone_elses_directory(tmp_path: Path) -> Path:
    """A directory of another user's: root gives one away; anyone else has the root directory."""
    if os.geteuid() != 0:
        return Path("/")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)  # nobody
    return theirs


async def test_a_context_keeps_its_identity_provider_unless_told_otherwise(
    gateway: GatewayStack, provider: Provider, env: dict[str, str], config_file: Path
) -> None:
    before = (
        "config",
        "set-context",
        "dev",
        "--api",
        gateway.base_url,
        "--issuer",
        "https://login.example.com",
    )
    assert (await platformctl(*before, env=env)).code == 0
    refused = await platformctl("login", "--context", "dev", env=env)
    assert (refused.code, refused.stderr) == (
        4,
        f"platformctl: the API at {gateway.base_url} now names the identity provider {provider.issuer}, "
        "but context dev signs in with https://login.example.com; if that change is expected, run "
        "'platformctl login --context dev --accept-issuer' "
        f"(or 'platformctl config set-context dev --issuer {provider.issuer}')\n",
    )
    assert provider.grants == []  # refused before anyone signed in
    assert stored(config_file)["contexts"]["dev"]["issuer"] == "https://login.example.com"
    accepted = await device_login(env, "--context", "dev", "--accept-issuer")
    assert accepted.code == 0, accepted.stderr
    assert stored(config_file)["contexts"]["dev"]["issuer"] == provider.issuer
    # From now on the new one is the context's: a plain login goes through.
    assert (await device_login(env, "--context", "dev")).code == 0


async def test_signing_in_is_over_https_only_except_on_this_machine(
    nats_url: str, isolation: Any, env: dict[str, str]
) -> None:
    plain = await platformctl("login", "--api", "http://platform.example.com", env=env)
    assert (plain.code, plain.stderr) == (
        2,
        "platformctl: the API http://platform.example.com is not https: platformctl signs in over https "
        "only (plain http only to this machine: localhost, 127.0.0.1, ::1)\n",
    )
    plain_issuer = {
        "PLATFORM_OIDC_ISSUER_URL": "http://login.example.com",
        "PLATFORM_OIDC_AUDIENCE": "platform",
        "PLATFORM_OIDC_CLIENT_ID": "platformctl",
        "PLATFORM_JWT_HS256_SECRET": "",
    }
    async with gateway_stack(nats_url, isolation.rpc_prefix, **plain_issuer) as stack:
        refused = await platformctl("login", "--api", stack.base_url, env=env)
    assert (refused.code, refused.stderr) == (
        3,
        "platformctl: the identity provider http://login.example.com is not https: platformctl signs in "
        "over https only (plain http only to this machine: localhost, 127.0.0.1, ::1)\n",
    )


async def test_browser_login_with_pkce(
    gateway: GatewayStack, provider: Provider, env: dict[str, str]
) -> None:
    result = await platformctl("login", "--browser", "--api", gateway.base_url, env=env)
    assert result.code == 0, result.stderr
    [url] = [line for line in result.stderr.splitlines() if line.startswith(f"{provider.issuer}/authorize?")]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"][0].startswith("http://127.0.0.1:")
    assert provider.grants == ["authorization_code"]  # the provider checked the verifier
    whoami = await platformctl("whoami", env=env)
    assert whoami.json()["actor"] == "olivia@example.com"


async def test_a_redirect_that_is_not_this_logins_is_ignored(
    gateway: GatewayStack, provider: Provider, env: dict[str, str]
) -> None:
    nowhere = {**env, "BROWSER": "true"}  # a browser that opens nothing: the test is the user
    async with started_platformctl("login", "--browser", "--api", gateway.base_url, env=nowhere) as running:
        url = await running.stderr_line(f"{provider.issuer}/authorize?")
        redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        async with httpx.AsyncClient() as browser:
            forged = await browser.get(redirect_uri, params={"code": "stolen", "state": "guessed"})
            assert forged.status_code == 400
            signed_in = await browser.get(url, follow_redirects=True)
            assert signed_in.status_code == 200
            assert "Signed in" in signed_in.text
        result = await running.finish()
    assert result.code == 0, result.stderr
    assert provider.grants == ["authorization_code"]


async def test_a_denied_device_sign_in_fails(
    gateway: GatewayStack, env: dict[str, str], config_file: Path
) -> None:
    result = await device_login(env, "--api", gateway.base_url, consent="deny")
    assert result.code == 4
    assert result.stderr.splitlines()[-1] == "platformctl: the sign-in was denied"
    assert names_in(config_file.parent) == []  # no context, no tokens


async def test_slow_down_makes_the_polls_wait_five_seconds_more(
    gateway: GatewayStack, provider: Provider, env: dict[str, str]
) -> None:
    provider.slow_down_polls = 1
    assert (await device_login(env, "--api", gateway.base_url)).code == 0
    first, second, *_ = provider.polls
    assert second - first >= provider.device_interval + 5


async def test_a_negative_poll_interval_is_one_second(
    gateway: GatewayStack, provider: Provider, env: dict[str, str]
) -> None:
    provider.device_interval = -1
    result = await device_login(env, "--api", gateway.base_url)
    assert result.code == 0, result.stderr


async def test_a_huge_poll_interval_still_polls_before_the_code_expires(
    gateway: GatewayStack, provider: Provider, env: dict[str, str]
) -> None:
    provider.device_interval, provider.device_code_ttl = 1000, 2
    started = time.monotonic()
    result = await platformctl("login", "--api", gateway.base_url, env=env)  # nobody signs in
    assert result.code == 4
    assert result.stderr.splitlines()[-1] == (
        "platformctl: the code expired before the sign-in was completed; run 'platformctl login' again"
    )
    assert len(provider.polls) == 1
    assert provider.polls[0] - started < 5
    assert time.monotonic() - started < 10


async def test_an_expired_token_is_refreshed(
    gateway: GatewayStack, provider: Provider, env: dict[str, str], config_file: Path
) -> None:
    provider.access_token_ttl = 1
    assert (await device_login(env, "--api", gateway.base_url, "--context", "dev")).code == 0
    cache = config_file.parent / "tokens" / "dev.json"
    signed_in = stored(cache)
    await asyncio.sleep(1.2)  # the access token has expired
    whoami = await platformctl("whoami", env=env)
    assert whoami.code == 0, whoami.stderr
    assert provider.grants == [DEVICE_GRANT, "refresh_token"]
    refreshed = stored(cache)
    assert refreshed["token"] != signed_in["token"]
    assert refreshed["refresh_token"] != signed_in["refresh_token"]  # rotated, and kept
    assert mode(cache) == 0o600
    # The provider ends the session: the next refresh is refused, and the message says what to do.
    provider.refresh_tokens.clear()
    await asyncio.sleep(1.2)
    expired = await platformctl("whoami", env=env)
    assert expired.code == 4
    assert (
        expired.stderr
        == "platformctl: the sign-in to dev has expired; run 'platformctl login --context dev'\n"
    )


async def test_processes_refreshing_at_once_share_one_refresh(
    gateway: GatewayStack, provider: Provider, env: dict[str, str], config_file: Path
) -> None:
    # Within the 30 s skew: the next command refreshes it, while the gateway still takes it.
    provider.access_token_ttl = 20
    assert (await device_login(env, "--api", gateway.base_url, "--context", "dev")).code == 0
    provider.access_token_ttl = 600
    provider.refresh_delay_seconds = 1.0  # both are refreshing, or waiting, at the same time
    first, second = await asyncio.gather(platformctl("whoami", env=env), platformctl("whoami", env=env))
    assert (first.code, first.stderr) == (0, "")
    assert (second.code, second.stderr) == (0, "")
    # One refresh; the other process used its token instead of spending the rotated one again.
    assert provider.grants == [DEVICE_GRANT, "refresh_token"]
    assert provider.reused == []
    [live] = provider.refresh_tokens
    assert stored(config_file.parent / "tokens" / "dev.json")["refresh_token"] == live


async def test_contexts_switch_between_two_gateways(
    nats_url: str, isolation: Any, gateway: GatewayStack, provider: Provider, env: dict[str, str]
) -> None:
    async with oidc_provider() as other_provider:
        other_provider.user = dict(BOB)
        other_env = signing_in_env(other_provider)
        async with gateway_stack(nats_url, f"{isolation.rpc_prefix}-b", **other_env) as other:
            assert (await device_login(env, "--api", gateway.base_url, "--context", "a")).code == 0
            assert (await device_login(env, "--api", other.base_url, "--context", "b")).code == 0
            listed = await platformctl("config", "get-contexts", env=env)
            assert listed.json()["items"] == [
                {
                    "name": "a",
                    "current": False,
                    "api": gateway.base_url,
                    "issuer": provider.issuer,
                    "team": None,
                    "output": None,
                },
                {
                    "name": "b",
                    "current": True,
                    "api": other.base_url,
                    "issuer": other_provider.issuer,
                    "team": None,
                    "output": None,
                },
            ]
            # Each gateway trusts its own provider only: a wrong pairing would be a 401.
            assert await actor(env) == "bob@example.com"
            assert await actor(env, "--context", "a") == "olivia@example.com"
            switched = await platformctl("config", "use-context", "a", env=env)
            assert switched.stderr == f"Switched to context a ({gateway.base_url})\n"
            assert await actor(env) == "olivia@example.com"
            # A context's token goes to its own API only, never to one named on the command line.
            elsewhere = await platformctl("--api", other.base_url, "whoami", env=env)
            assert elsewhere.code == 2
            assert "no token" in elsewhere.stderr
            # ... nor when the context itself is pointed at another API after the sign-in.
            await platformctl("config", "set-context", "a", "--api", other.base_url, env=env)
            moved = await platformctl("whoami", env=env)
            assert moved.code == 2
            assert "no token" in moved.stderr


async def actor(env: dict[str, str], *args: str) -> str:
    result = await platformctl(*args, "whoami", env=env)
    assert result.code == 0, result.stderr
    name: str = result.json()["actor"]
    return name


async def test_logout_forgets_and_revokes(
    gateway: GatewayStack, provider: Provider, env: dict[str, str], config_file: Path
) -> None:
    assert (await device_login(env, "--api", gateway.base_url, "--context", "dev")).code == 0
    [refresh_token] = provider.refresh_tokens
    result = await platformctl("logout", env=env)
    assert (result.code, result.stderr) == (0, "Signed out of dev\n")
    assert names_in(config_file.parent / "tokens") == []
    assert provider.revoked == [refresh_token]
    after = await platformctl("whoami", env=env)
    assert after.code == 2
    assert "run 'platformctl login'" in after.stderr
    again = await platformctl("logout", "--context", "dev", env=env)
    assert (again.code, again.stderr) == (0, "Not signed in to dev\n")


async def test_token_mint_is_refused_against_strict_production(
    nats_url: str, isolation: Any, gateway: GatewayStack
) -> None:
    strict = {
        "PLATFORM_STRICT_PRODUCTION": "true",
        "PLATFORM_OIDC_ISSUER_URL": "https://login.example.com",
        "PLATFORM_OIDC_AUDIENCE": "platform",
        "PLATFORM_OIDC_CLIENT_ID": "platformctl",
        "PLATFORM_JWT_HS256_SECRET": "",
    }
    mint_args = ("token", "mint", "--role", "viewer", "--actor", "a@example.com", "--secret", "s" * 32)
    async with gateway_stack(nats_url, isolation.rpc_prefix, **strict) as production:
        async with httpx.AsyncClient(base_url=production.base_url) as http:
            published = (await http.get("/v1/auth/config")).json()
        assert published["strict_production"] is True
        refused = await platformctl(*mint_args, "--api", production.base_url)
        assert refused.code == 4
        assert refused.stdout == ""
        assert refused.stderr == (
            f"platformctl: the API at {production.base_url} runs in strict production mode and refuses "
            "development tokens; sign in with 'platformctl login' instead\n"
        )
    # Elsewhere, and with no API to ask at all, minting stays a local development tool.
    assert (await platformctl(*mint_args, "--api", gateway.base_url)).code == 0
    assert (await platformctl(*mint_args, "--api", f"http://127.0.0.1:{free_port()}")).code == 0


async def test_flags_and_environment_win_over_the_context(
    nats_url: str, isolation: Any, provider: Provider, env: dict[str, str]
) -> None:
    # This gateway takes development tokens beside the provider's, to tell them apart.
    mixed = {
        **signing_in_env(provider),
        "PLATFORM_JWT_HS256_SECRET": "gateway-test-secret-that-is-long-enough-0123456789",
    }
    async with gateway_stack(nats_url, isolation.rpc_prefix, **mixed) as stack:
        assert (await device_login(env, "--api", stack.base_url)).code == 0
        from_env = {**env, "PLATFORM_TOKEN": mint("viewer", email="env@example.com")}
        assert await actor(env) == "olivia@example.com"
        assert await actor(from_env) == "env@example.com"
        assert (
            await actor(from_env, "--token", mint("viewer", email="flag@example.com")) == "flag@example.com"
        )
        # PLATFORM_API names another API: the context's API and token are not used.
        unreachable = f"http://127.0.0.1:{free_port()}"
        moved = await platformctl("whoami", env={**from_env, "PLATFORM_API": unreachable})
        assert moved.stderr == f"platformctl: cannot reach the API at {unreachable}\n"
        # --api wins over PLATFORM_API, and naming the context's own API keeps its token.
        back = await platformctl("--api", stack.base_url, "whoami", env={**env, "PLATFORM_API": unreachable})
        assert back.json()["actor"] == "olivia@example.com"
