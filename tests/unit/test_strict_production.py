"""Strict production mode refuses to start without its security settings; each refusal names
the variable to fix (SPEC.md "Auth": OIDC issuer and audience, approval secret, Postgres,
team scoping, static JWT secrets only when allowed, no secret shorter than 32 bytes; and an
attestation key that is not the approval secret every approver holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs.settings import SettingsError, load_settings, reveal
from services.approval.settings import ApprovalSettings
from services.gateway.settings import GatewaySettings
from services.git_publisher.settings import GitPublisherSettings
from services.tools.platformd.registry import BACKEND_SERVICES, service_entry

LONG_SECRET = "s" * 32
# Strict production wants an attestation key distinct from the approval secret.
ATTESTATION_KEY = "t" * 32
ATTESTATION = {"PLATFORM_ATTESTATION_HMAC_SECRET": ATTESTATION_KEY}
DSN = "postgresql://platform@db.internal/platform"
STRICT_GATEWAY = {
    "PLATFORM_STRICT_PRODUCTION": "true",
    "PLATFORM_OIDC_ISSUER_URL": "https://idp.example.com/realms/platform",
    "PLATFORM_OIDC_AUDIENCE": "platform-api",
}


def refusals(settings_class: type[Any], env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as refused:
        load_settings(settings_class, env)
    return refused.value.problems


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in names}


# -- gateway ----------------------------------------------------------------------------------------


def test_a_strict_gateway_starts_with_oidc_and_always_scopes_teams() -> None:
    settings = load_settings(GatewaySettings, STRICT_GATEWAY)
    assert settings.is_strict
    assert settings.team_scope_enforced
    assert settings.jwt_secret is None


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("PLATFORM_OIDC_ISSUER_URL", "PLATFORM_OIDC_ISSUER_URL is required in strict production mode"),
        ("PLATFORM_OIDC_AUDIENCE", "PLATFORM_OIDC_AUDIENCE is required in strict production mode"),
    ],
)
def test_the_gateway_needs_an_oidc_issuer_and_audience(missing: str, message: str) -> None:
    env = without(STRICT_GATEWAY, missing)
    if missing == "PLATFORM_OIDC_ISSUER_URL":
        env["PLATFORM_JWT_HS256_SECRET"] = LONG_SECRET  # so the only complaint is strictness
        env["PLATFORM_ALLOW_STATIC_JWT_IN_PROD"] = "true"
    assert message in refusals(GatewaySettings, env)


def test_prod_environment_is_strict_too() -> None:
    problems = refusals(GatewaySettings, {"PLATFORM_ENV": "prod", "PLATFORM_JWT_HS256_SECRET": LONG_SECRET})
    assert "PLATFORM_OIDC_ISSUER_URL is required in strict production mode" in problems
    assert "PLATFORM_OIDC_AUDIENCE is required in strict production mode" in problems
    assert any("PLATFORM_ALLOW_STATIC_JWT_IN_PROD" in problem for problem in problems)


def test_the_issuer_must_use_https() -> None:
    env = {**STRICT_GATEWAY, "PLATFORM_OIDC_ISSUER_URL": "http://idp.example.com"}
    assert "PLATFORM_OIDC_ISSUER_URL must use https in strict production mode" in refusals(
        GatewaySettings, env
    )


def test_team_scoping_cannot_be_switched_off() -> None:
    env = {**STRICT_GATEWAY, "PLATFORM_ENFORCE_TEAM_SCOPE": "false"}
    [problem] = refusals(GatewaySettings, env)
    assert problem.startswith("PLATFORM_ENFORCE_TEAM_SCOPE=false is refused in strict production mode")


def test_static_jwt_secrets_only_when_allowed() -> None:
    static = {
        **STRICT_GATEWAY,
        "PLATFORM_JWT_HS256_SECRET": LONG_SECRET,
        "PLATFORM_JWT_ISSUER": "https://ci.example.com",
        "PLATFORM_JWT_AUDIENCE": "platform-api",
    }
    [problem] = refusals(GatewaySettings, static)
    assert problem == (
        "PLATFORM_JWT_HS256_SECRET is refused in strict production mode unless PLATFORM_ALLOW_STATIC_JWT_IN_PROD=true"
    )
    allowed = {
        **STRICT_GATEWAY,
        "PLATFORM_JWT_HS256_SECRET": LONG_SECRET,
        "PLATFORM_ALLOW_STATIC_JWT_IN_PROD": "true",
        "PLATFORM_JWT_ISSUER": "https://ci.example.com",
        "PLATFORM_JWT_AUDIENCE": "platform-api",
    }
    assert reveal(load_settings(GatewaySettings, allowed).jwt_secret) == LONG_SECRET


def test_static_jwt_secrets_need_an_issuer_and_audience_in_strict_mode() -> None:
    """Regression: a static secret was accepted in strict mode without any iss/aud check, so a
    token minted with the same secret for another service was valid here."""
    env = {
        **STRICT_GATEWAY,
        "PLATFORM_JWT_HS256_SECRET": LONG_SECRET,
        "PLATFORM_ALLOW_STATIC_JWT_IN_PROD": "true",
    }
    assert refusals(GatewaySettings, env) == [
        "PLATFORM_JWT_ISSUER is required with PLATFORM_JWT_HS256_SECRET in strict production mode",
        "PLATFORM_JWT_AUDIENCE is required with PLATFORM_JWT_HS256_SECRET in strict production mode",
    ]


def test_short_static_secrets_are_refused() -> None:
    env = {
        **STRICT_GATEWAY,
        "PLATFORM_JWT_HS256_SECRET": "s" * 31,
        "PLATFORM_ALLOW_STATIC_JWT_IN_PROD": "true",
        "PLATFORM_JWT_ISSUER": "https://ci.example.com",
        "PLATFORM_JWT_AUDIENCE": "platform-api",
    }
    [problem] = refusals(GatewaySettings, env)
    assert problem == "PLATFORM_JWT_HS256_SECRET must be at least 32 bytes in strict production mode"


def test_every_refusal_is_reported_at_once() -> None:
    problems = refusals(
        GatewaySettings,
        {
            "PLATFORM_STRICT_PRODUCTION": "yes",
            "PLATFORM_ENFORCE_TEAM_SCOPE": "off",
            "PLATFORM_JWT_HS256_SECRET": "short",
        },
    )
    named = " ".join(problems)
    for variable in (
        "PLATFORM_OIDC_ISSUER_URL",
        "PLATFORM_OIDC_AUDIENCE",
        "PLATFORM_ENFORCE_TEAM_SCOPE",
        "PLATFORM_ALLOW_STATIC_JWT_IN_PROD",
    ):
        assert variable in named
    assert "at least 32 bytes" in named


def test_oidc_needs_an_audience_even_in_development() -> None:
    [problem] = refusals(GatewaySettings, {"PLATFORM_OIDC_ISSUER_URL": "https://idp.example.com"})
    assert problem == "PLATFORM_OIDC_AUDIENCE is required with PLATFORM_OIDC_ISSUER_URL"


def test_oidc_algorithms_are_asymmetric_only() -> None:
    env = {**STRICT_GATEWAY, "PLATFORM_OIDC_ALGORITHMS": "RS256,HS256,none"}
    [problem] = refusals(GatewaySettings, env)
    assert problem.startswith("PLATFORM_OIDC_ALGORITHMS: HS256, none not allowed")


# -- approval and the other services ----------------------------------------------------------------


def test_the_approval_service_needs_its_secret() -> None:
    problems = refusals(
        ApprovalSettings,
        {"PLATFORM_STRICT_PRODUCTION": "true", "PLATFORM_POSTGRES_DSN": DSN, **ATTESTATION},
    )
    assert problems == ["PLATFORM_APPROVAL_HMAC_SECRET is required in strict production mode"]
    short = {
        "PLATFORM_ENV": "prod",
        "PLATFORM_POSTGRES_DSN": DSN,
        "PLATFORM_APPROVAL_HMAC_SECRET": "x" * 16,
        **ATTESTATION,
    }
    assert refusals(ApprovalSettings, short) == [
        "PLATFORM_APPROVAL_HMAC_SECRET must be at least 32 bytes in strict production mode"
    ]
    good = {**short, "PLATFORM_APPROVAL_HMAC_SECRET": LONG_SECRET}
    assert reveal(load_settings(ApprovalSettings, good).approval_hmac_secret) == LONG_SECRET


# -- the attestation key (approval signs, git-publisher verifies) ---------------------------------

STRICT_APPROVAL = {
    "PLATFORM_STRICT_PRODUCTION": "true",
    "PLATFORM_POSTGRES_DSN": DSN,
    "PLATFORM_APPROVAL_HMAC_SECRET": LONG_SECRET,
}
STRICT_GIT_PUBLISHER = {
    "PLATFORM_ENV": "prod",
    "PLATFORM_POSTGRES_DSN": DSN,
    "PLATFORM_GITOPS_REPO_URL": "https://git.example.com/platform/gitops.git",
    "PLATFORM_GIT_PUSH_ENABLED": "true",
}
ATTESTING_SERVICES = {
    "approval": (ApprovalSettings, STRICT_APPROVAL),
    "git_publisher": (GitPublisherSettings, STRICT_GIT_PUBLISHER),
}


@pytest.mark.parametrize("service", list(ATTESTING_SERVICES))
@pytest.mark.parametrize(
    ("attestation_key", "message"),
    [
        (
            None,
            "PLATFORM_ATTESTATION_HMAC_SECRET is required in strict production mode "
            "(a server-side key, distinct from PLATFORM_APPROVAL_HMAC_SECRET)",
        ),
        ("t" * 31, "PLATFORM_ATTESTATION_HMAC_SECRET must be at least 32 bytes in strict production mode"),
        (
            LONG_SECRET,
            "PLATFORM_ATTESTATION_HMAC_SECRET must differ from PLATFORM_APPROVAL_HMAC_SECRET in strict "
            "production mode (approvers hold the approval secret and could forge attestations with it)",
        ),
    ],
    ids=["missing", "short", "the-approval-secret"],
)
def test_strict_production_needs_an_attestation_key_of_its_own(
    service: str, attestation_key: str | None, message: str
) -> None:
    settings_class, strict = ATTESTING_SERVICES[service]
    # git-publisher does not need the approval secret, but if it has it, the keys must differ.
    env = {**strict, "PLATFORM_APPROVAL_HMAC_SECRET": LONG_SECRET}
    if attestation_key is not None:
        env["PLATFORM_ATTESTATION_HMAC_SECRET"] = attestation_key
    assert refusals(settings_class, env) == [message]


@pytest.mark.parametrize("service", list(ATTESTING_SERVICES))
def test_strict_production_signs_and_verifies_with_the_attestation_key(service: str) -> None:
    settings_class, strict = ATTESTING_SERVICES[service]
    settings = load_settings(settings_class, {**strict, **ATTESTATION})
    assert reveal(settings.attestation_key) == ATTESTATION_KEY


def test_git_publisher_does_not_need_the_approvers_secret_in_strict_production() -> None:
    settings = load_settings(GitPublisherSettings, {**STRICT_GIT_PUBLISHER, **ATTESTATION})
    assert settings.approval_hmac_secret is None
    assert reveal(settings.attestation_key) == ATTESTATION_KEY


@pytest.mark.parametrize("service", list(ATTESTING_SERVICES))
def test_outside_strict_mode_the_attestation_key_falls_back_to_the_approval_secret(service: str) -> None:
    settings_class, _ = ATTESTING_SERVICES[service]
    dev = {"PLATFORM_APPROVAL_HMAC_SECRET": "dev-approval-secret"}
    assert reveal(load_settings(settings_class, dev).attestation_key) == "dev-approval-secret"
    assert reveal(load_settings(settings_class, {**dev, **ATTESTATION}).attestation_key) == ATTESTATION_KEY
    assert load_settings(settings_class, {}).attestation_key is None


def test_the_attestation_key_can_come_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "attestation-key"
    key_file.write_text(ATTESTATION_KEY + "\n")
    env = {**STRICT_APPROVAL, "PLATFORM_ATTESTATION_HMAC_SECRET_FILE": str(key_file)}
    assert reveal(load_settings(ApprovalSettings, env).attestation_key) == ATTESTATION_KEY
    missing = {**STRICT_APPROVAL, "PLATFORM_ATTESTATION_HMAC_SECRET_FILE": str(tmp_path / "missing")}
    [problem] = [p for p in refusals(ApprovalSettings, missing) if "_FILE" in p]
    assert problem.startswith("PLATFORM_ATTESTATION_HMAC_SECRET_FILE: cannot read the file")


def test_an_unreadable_secret_file_is_a_start_up_error(tmp_path: Path) -> None:
    env = {"PLATFORM_APPROVAL_HMAC_SECRET_FILE": str(tmp_path / "missing")}
    [problem] = refusals(ApprovalSettings, env)
    assert problem.startswith("PLATFORM_APPROVAL_HMAC_SECRET_FILE: cannot read the file")
    secret_file = tmp_path / "secret"
    secret_file.write_text(LONG_SECRET + "\n")
    settings = load_settings(ApprovalSettings, {"PLATFORM_APPROVAL_HMAC_SECRET_FILE": str(secret_file)})
    assert reveal(settings.approval_hmac_secret) == LONG_SECRET


@pytest.mark.parametrize("service", BACKEND_SERVICES)
def test_every_service_needs_postgres(service: str) -> None:
    env = {"PLATFORM_STRICT_PRODUCTION": "true", "PLATFORM_APPROVAL_HMAC_SECRET": LONG_SECRET}
    problems = refusals(service_entry(service).settings_class, env)
    assert "PLATFORM_POSTGRES_DSN is required in strict production mode" in problems
