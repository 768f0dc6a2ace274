"""Gateway authentication: token verification, claim resolution, the role matrix, auth settings."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Controller, Litestar, get
from litestar.testing import TestClient

from contracts.roles import Role
from libs.settings import SettingsError, load_settings
from libs.telemetry import REGISTRY
from services.gateway.adapters.tokens import Authenticator, InvalidToken, StaticSecretVerifier
from services.gateway.domain.claims import ClaimNames, resolve_principal
from services.gateway.domain.errors import PermissionDenied, Unauthenticated
from services.gateway.domain.roles import Action, is_allowed
from services.gateway.entrypoints.authentication import requires
from services.gateway.entrypoints.errors import EXCEPTION_HANDLERS
from services.gateway.settings import GatewaySettings

SECRET = "unit-test-secret-that-is-64-bytes-long-for-hs512-0123456789abcdef"
NAMES = ClaimNames()


def token(claims: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def valid_claims(**extra: Any) -> dict[str, Any]:
    return {
        "sub": "u-1",
        "email": "alice@example.com",
        "role": "requester",
        "exp": int(time.time()) + 600,
        **extra,
    }


def verifier(**kwargs: Any) -> StaticSecretVerifier:
    return StaticSecretVerifier(SECRET, ["HS256", "HS384", "HS512"], **kwargs)


# -- claim resolution ----------------------------------------------------------------------------


def test_role_from_a_string_claim() -> None:
    assert resolve_principal({"sub": "u", "role": "approver"}, NAMES).role is Role.APPROVER


def test_most_privileged_valid_role_in_a_list_wins() -> None:
    principal = resolve_principal({"sub": "u", "role": ["viewer", "admin", "requester"]}, NAMES)
    assert principal.role is Role.ADMIN


def test_unknown_roles_are_ignored() -> None:
    principal = resolve_principal({"sub": "u", "role": ["superuser", "root", "viewer"]}, NAMES)
    assert principal.role is Role.VIEWER


@pytest.mark.parametrize("name", ["ADMIN", "Admin", " admin", "admin "])
def test_role_names_match_exactly(name: str) -> None:
    """Regression: ``ADMIN`` (an identity provider's group of that name) granted admin."""
    with pytest.raises(PermissionDenied):
        resolve_principal({"sub": "u", "role": name}, NAMES)
    assert resolve_principal({"sub": "u", "role": [name, "viewer"]}, NAMES).role is Role.VIEWER


@pytest.mark.parametrize("roles", [None, "superuser", ["root"], [], 7])
def test_no_valid_role_is_forbidden(roles: Any) -> None:
    claims = {"sub": "u"} if roles is None else {"sub": "u", "role": roles}
    with pytest.raises(PermissionDenied) as caught:
        resolve_principal(claims, NAMES)
    assert caught.value.status == 403


def test_actor_comes_from_the_actor_claim() -> None:
    principal = resolve_principal({"sub": "u-1", "email": "alice@example.com", "role": "viewer"}, NAMES)
    assert (principal.actor, principal.subject) == ("alice@example.com", "u-1")


def test_actor_falls_back_to_the_subject() -> None:
    principal = resolve_principal({"sub": "svc-ci", "role": "viewer"}, NAMES)
    assert (principal.actor, principal.subject) == ("svc-ci", "svc-ci")


def test_a_token_naming_nobody_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        resolve_principal({"role": "admin"}, NAMES)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u-1", "email": "alice@example.com\x00admin"},
        {"sub": "u-1\n", "email": "alice@example.com"},
        {"sub": "u-1\x1b[31m"},
        {"sub": "u-1", "teams": ["payments", "ops\x7f"]},
    ],
)
def test_a_claim_with_control_characters_invalidates_the_token(claims: dict[str, Any]) -> None:
    with pytest.raises(Unauthenticated) as caught:
        resolve_principal({**claims, "role": "viewer"}, NAMES)
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert "control characters" in caught.value.message


def test_teams_absent_means_unrestricted() -> None:
    assert resolve_principal({"sub": "u", "role": "viewer"}, NAMES).teams is None


def test_teams_from_a_list_or_a_single_string() -> None:
    assert resolve_principal({"sub": "u", "role": "viewer", "teams": ["a", "b"]}, NAMES).teams == ["a", "b"]
    assert resolve_principal({"sub": "u", "role": "viewer", "teams": "payments"}, NAMES).teams == ["payments"]


def test_malformed_teams_claim_is_rejected() -> None:
    with pytest.raises(Unauthenticated):
        resolve_principal({"sub": "u", "role": "viewer", "teams": [1, 2]}, NAMES)


def test_configured_and_nested_claim_names() -> None:
    names = ClaimNames(roles="realm_access.roles", actor="preferred_username", subject="sub", teams="groups")
    claims = {
        "sub": "u",
        "preferred_username": "bob",
        "realm_access": {"roles": ["approver"]},
        "groups": ["x"],
    }
    principal = resolve_principal(claims, names)
    assert (principal.role, principal.actor, principal.teams) == (Role.APPROVER, "bob", ["x"])


def test_principal_becomes_the_contract_actor() -> None:
    actor = resolve_principal(valid_claims(teams=["payments"]), NAMES).to_actor()
    assert (actor.actor, actor.subject, actor.role, actor.teams) == (
        "alice@example.com",
        "u-1",
        "requester",
        ["payments"],
    )


# -- role matrix ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.VIEWER, False), (Role.REQUESTER, True), (Role.APPROVER, False), (Role.ADMIN, True)],
)
def test_who_may_create_requests(role: Role, allowed: bool) -> None:
    assert is_allowed(role, Action.CREATE_REQUEST) is allowed


def test_everyone_reads_and_only_admins_change_classes() -> None:
    assert all(is_allowed(role, Action.READ) for role in Role)
    assert [role for role in Role if is_allowed(role, Action.UPSERT_CLASS)] == [Role.ADMIN]


# -- token verification --------------------------------------------------------------------------


async def test_a_valid_token_verifies() -> None:
    claims = await verifier().verify(token(valid_claims()))
    assert claims["email"] == "alice@example.com"


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_hs384_and_hs512_are_accepted(algorithm: str) -> None:
    claims = await verifier().verify(token(valid_claims(), algorithm=algorithm))
    assert claims["sub"] == "u-1"


async def test_an_expired_token_is_rejected() -> None:
    expired = token(valid_claims(exp=int(time.time()) - 3600))
    with pytest.raises(InvalidToken, match="expired"):
        await verifier().verify(expired)


async def test_alg_none_is_rejected() -> None:
    unsigned = jwt.encode(valid_claims(), None, algorithm="none")
    with pytest.raises(InvalidToken):
        await verifier().verify(unsigned)


async def test_alg_none_with_a_forged_header_is_rejected() -> None:
    # A real HS256 token whose header was rewritten to alg "none".
    signed = token(valid_claims())
    _, payload, signature = signed.split(".")
    forged_header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    with pytest.raises(InvalidToken):
        await verifier().verify(f"{forged_header}.{payload}.{signature}")


async def test_a_token_signed_with_another_secret_is_rejected() -> None:
    with pytest.raises(InvalidToken, match="signature"):
        await verifier().verify(token(valid_claims(), secret="another-secret-that-is-long-enough-0123456789"))


async def test_a_token_without_exp_is_rejected() -> None:
    claims = valid_claims()
    del claims["exp"]
    with pytest.raises(InvalidToken, match="exp"):
        await verifier().verify(token(claims))


async def test_an_algorithm_outside_the_allow_list_is_rejected() -> None:
    only_hs256 = StaticSecretVerifier(SECRET, ["HS256"])
    with pytest.raises(InvalidToken, match="algorithm"):
        await only_hs256.verify(token(valid_claims(), algorithm="HS512"))


async def test_an_asymmetric_token_cannot_verify_against_the_static_secret() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken):
        await verifier().verify(jwt.encode(valid_claims(), key, algorithm="RS256"))


async def test_garbage_is_rejected() -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        await verifier().verify("not-a-jwt")


async def test_issuer_and_audience_are_checked_when_configured() -> None:
    strict = verifier(issuer="https://issuer.example", audience="platform")
    good = token(valid_claims(iss="https://issuer.example", aud="platform"))
    assert (await strict.verify(good))["sub"] == "u-1"
    with pytest.raises(InvalidToken, match="issuer"):
        await strict.verify(token(valid_claims(iss="https://evil.example", aud="platform")))
    with pytest.raises(InvalidToken, match="audience"):
        await strict.verify(token(valid_claims(iss="https://issuer.example", aud="other")))
    with pytest.raises(InvalidToken):
        await strict.verify(token(valid_claims()))


async def test_audience_is_not_checked_when_not_configured() -> None:
    assert (await verifier().verify(token(valid_claims(aud="anything"))))["sub"] == "u-1"


def test_only_hmac_algorithms_can_be_configured() -> None:
    with pytest.raises(ValueError, match="HS256"):
        StaticSecretVerifier(SECRET, ["HS256", "RS256"])
    with pytest.raises(ValueError, match="HS256"):
        StaticSecretVerifier(SECRET, ["none"])


# -- the Authorization header --------------------------------------------------------------------


async def test_missing_header_gets_a_bare_bearer_challenge() -> None:
    authenticator = Authenticator(verifier(), NAMES)
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(None)
    assert caught.value.headers["WWW-Authenticate"] == "Bearer"


async def test_wrong_scheme_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        await Authenticator(verifier(), NAMES).authenticate("Basic dXNlcjpwYXNz")


async def test_invalid_token_gets_an_invalid_token_challenge() -> None:
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(verifier(), NAMES).authenticate("Bearer not-a-jwt")
    assert 'error="invalid_token"' in caught.value.headers["WWW-Authenticate"]


async def test_authenticate_resolves_the_principal() -> None:
    principal = await Authenticator(verifier(), NAMES).authenticate(
        f"Bearer {token(valid_claims(role=['admin']))}"
    )
    assert (principal.actor, principal.role) == ("alice@example.com", Role.ADMIN)


def test_a_guard_that_finds_no_caller_answers_401_instead_of_crashing() -> None:
    """A guarded route the authentication middleware skipped (no ``security`` declared, or
    Litestar's automatic OPTIONS handler under a controller-level guard) fails closed."""

    class Unsecured(Controller):
        path = "/unsecured"
        guards = [requires(Action.READ)]

        @get(sync_to_thread=False)
        def read(self) -> str:
            return "never"

    app = Litestar([Unsecured], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as client:
        for method in ("GET", "OPTIONS"):
            response = client.request(method, "/unsecured")
            assert response.status_code == 401, (method, response.text)
            assert response.json()["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"


def verifications(result: str) -> float:
    return REGISTRY.get_sample_value("platform_gateway_token_verifications_total", {"result": result}) or 0.0


@pytest.mark.parametrize(
    ("claims", "refusal"),
    [({"role": "nobody"}, PermissionDenied), ({"teams": {"payments": True}}, Unauthenticated)],
)
async def test_a_signed_token_without_a_usable_caller_counts_as_refused(
    claims: dict[str, Any], refusal: type[Exception]
) -> None:
    before = {result: verifications(result) for result in ("accepted", "refused")}
    with pytest.raises(refusal):
        await Authenticator(verifier(), NAMES).authenticate(f"Bearer {token(valid_claims(**claims))}")
    assert verifications("accepted") == before["accepted"]
    assert verifications("refused") == before["refused"] + 1


# -- settings ------------------------------------------------------------------------------------


def settings(**env: str) -> GatewaySettings:
    return load_settings(GatewaySettings, {"PLATFORM_JWT_HS256_SECRET": SECRET, **env})


def test_auth_settings_defaults() -> None:
    loaded = settings()
    assert loaded.jwt_algorithms == ["HS256", "HS384", "HS512"]
    assert (loaded.roles_claim, loaded.actor_claim, loaded.subject_claim, loaded.teams_claim) == (
        "role",
        "email",
        "sub",
        "teams",
    )
    assert loaded.listen_address() == ("127.0.0.1", 8080)


def test_port_overrides_the_address_port() -> None:
    assert settings(PLATFORM_ADDRESS="0.0.0.0:8080", PORT="9999").listen_address() == ("0.0.0.0", 9999)


def test_a_secret_is_required_because_auth_is_always_on() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_JWT_HS256_SECRET"):
        load_settings(GatewaySettings, {})


def test_asymmetric_or_none_algorithms_are_refused_for_the_static_secret() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_JWT_ALGORITHMS"):
        settings(PLATFORM_JWT_ALGORITHMS="HS256,RS256,none")


def test_strict_production_refuses_the_static_secret_unless_allowed() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_ALLOW_STATIC_JWT_IN_PROD"):
        settings(PLATFORM_ENV="prod")
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_settings(
            GatewaySettings,
            {
                "PLATFORM_JWT_HS256_SECRET": "short",
                "PLATFORM_STRICT_PRODUCTION": "true",
                "PLATFORM_ALLOW_STATIC_JWT_IN_PROD": "true",
            },
        )


def test_strict_production_does_not_ask_the_stateless_gateway_for_postgres() -> None:
    loaded = settings(
        PLATFORM_ENV="prod",
        PLATFORM_ALLOW_STATIC_JWT_IN_PROD="true",
        PLATFORM_JWT_ISSUER="https://ci.example.com",
        PLATFORM_JWT_AUDIENCE="platform-api",
        PLATFORM_OIDC_ISSUER_URL="https://idp.example.com",
        PLATFORM_OIDC_AUDIENCE="platform",
    )
    assert loaded.is_strict
    assert loaded.team_scope_enforced


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        # Regression: the email went into created_by, approvals and commit trailers unchecked.
        ({"sub": "u-1", "email": "a" * 243 + "@example.com"}, "'email' claim is longer than 254 characters"),
        ({"sub": "u" * 256}, "'sub' claim is longer than 255 characters"),
        ({"sub": "u-1", "email": "alice@example.com\u0085x"}, "'email' claim contains control characters"),
        ({"sub": "u-1", "email": "alice@example.com\u2028x"}, "'email' claim contains control characters"),
        (
            {"sub": "u-1", "email": "alice\u202e@example.com"},
            "'email' claim contains invisible format characters (bidirectional",
        ),
        ({"sub": "\ufeffu-1"}, "'sub' claim contains invisible format characters"),
        # Regression: a zero-width space made an actor that reads exactly like another.
        ({"sub": "u-1", "email": "alice\u200b@example.com"}, "'email' claim contains invisible"),
        ({"sub": "u-1", "email": "ali\u2060ce@example.com"}, "'email' claim contains invisible"),
        ({"sub": "u-1", "teams": ["t" * 256]}, "'teams' claim is longer than 255 characters"),
        ({"sub": "u-1", "teams": [f"t{i}" for i in range(1001)]}, "'teams' claim lists more than 1000 teams"),
    ],
)
def test_a_claim_too_long_or_with_hidden_characters_invalidates_the_token(
    claims: dict[str, Any], problem: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        resolve_principal({**claims, "role": "approver"}, NAMES)
    assert problem in caught.value.message


def test_claims_at_their_bounds_are_accepted() -> None:
    email = "a" * 242 + "@example.com"
    principal = resolve_principal({"sub": "u" * 255, "email": email, "role": "viewer"}, NAMES)
    assert (len(principal.actor), len(principal.subject)) == (254, 255)


def test_a_null_teams_claim_means_no_team_not_every_team() -> None:
    """Regression: ``teams: null`` made the token unrestricted, like a token without the claim."""
    assert resolve_principal({"sub": "u", "role": "requester", "teams": None}, NAMES).teams == []
