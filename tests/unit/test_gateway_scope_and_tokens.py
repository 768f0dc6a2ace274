"""Team scoping and which verifier a token goes to."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from contracts.inputs import ExtensionInput
from contracts.roles import Role
from libs.settings import load_settings
from services.gateway.adapters.tokens import InvalidToken, StaticSecretVerifier, TokenRouter
from services.gateway.domain.roles import lacks_team_scope
from services.gateway.settings import GatewaySettings
from services.intake.domain.validation import extended_ttl

SECRET = "unit-test-secret-that-is-long-enough-0123456789"


@pytest.mark.parametrize(
    ("role", "teams", "enforced", "lacks"),
    [
        (Role.REQUESTER, None, True, True),
        (Role.VIEWER, None, True, True),
        (Role.APPROVER, None, True, True),
        (Role.ADMIN, None, True, False),
        (Role.REQUESTER, ["payments"], True, False),
        (Role.REQUESTER, [], True, False),  # an empty claim is scoped to nothing, by the services
        (Role.REQUESTER, None, False, False),
    ],
)
def test_who_lacks_team_scope(role: Role, teams: list[str] | None, enforced: bool, lacks: bool) -> None:
    assert lacks_team_scope(role, teams, enforced=enforced) is lacks


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "u", "role": "viewer", "exp": int(time.time()) + 60, **extra}


async def test_a_router_without_oidc_refuses_asymmetric_tokens() -> None:
    router = TokenRouter(StaticSecretVerifier(SECRET, ["HS256"]), None)
    assert (await router.verify(jwt.encode(claims(), SECRET, algorithm="HS256")))["sub"] == "u"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidToken, match="RS256 is not accepted"):
        await router.verify(jwt.encode(claims(), key, algorithm="RS256"))


@pytest.mark.parametrize("alg", ["none", "HS1", "EdDSA", "RS256\u0000"])
async def test_unknown_algorithms_are_refused_without_echoing_them(alg: str) -> None:
    router = TokenRouter(StaticSecretVerifier(SECRET, ["HS256"]), None)
    signed = jwt.encode(claims(), SECRET, algorithm="HS256")
    _, payload, signature = signed.split(".")
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "JWT"}).encode()).rstrip(b"=").decode()
    token = f"{header}.{payload}.{signature}"
    with pytest.raises(InvalidToken) as refused:
        await router.verify(token)
    assert "not accepted" in str(refused.value)
    if alg != "none":
        assert alg not in str(refused.value)


def test_a_router_needs_a_verifier() -> None:
    with pytest.raises(ValueError, match="verifier"):
        TokenRouter(None, None)


def test_extension_validation_without_a_class_still_needs_a_positive_ttl() -> None:
    assert extended_ttl(ExtensionInput(ttl_hours=5), None) == 5
    with pytest.raises(Exception, match="ttl_hours"):
        ExtensionInput.model_validate({"ttl_hours": 0})


def test_empty_algorithm_lists_mean_the_defaults() -> None:
    # How the gateway chart leaves them unset.
    settings = load_settings(
        GatewaySettings,
        {"PLATFORM_JWT_HS256_SECRET": SECRET, "PLATFORM_JWT_ALGORITHMS": "", "PLATFORM_OIDC_ALGORITHMS": " "},
    )
    assert settings.jwt_algorithms == ["HS256", "HS384", "HS512"]
    assert settings.oidc_algorithms == ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
    assert settings.enforce_team_scope is None
