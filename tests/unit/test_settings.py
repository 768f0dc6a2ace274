"""Typed settings: parsing, bounds, *_FILE secrets, secrets that never print, the groups every
service composes, and start-up errors that name the variable."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest

from libs.settings import (
    AttestationSettings,
    Bounds,
    BusSettings,
    ConsumerSettings,
    DatabaseSettings,
    PlatformSettings,
    Secret,
    SecretUrl,
    SecuritySettings,
    SettingsError,
    TelemetrySettings,
    describe_settings,
    load_settings,
    reveal,
    secret_variables,
    setting,
    split_address,
)
from services.approval.settings import ApprovalSettings
from services.tools.platformd.main import main as platformd
from services.tools.platformd.registry import BACKEND_SERVICES, SERVICES, service_entry


@dataclass(frozen=True)
class Example:
    required: str = setting("X_REQUIRED", doc="required")
    flag: bool = setting("X_FLAG", False, doc="a boolean")
    count: Annotated[int, Bounds(ge=1, le=64)] = setting("X_COUNT", 3, doc="an integer from 1 to 64")
    ratio: Annotated[float, Bounds(gt=0)] = setting("X_RATIO", 0.5, doc="a positive number")
    names: list[str] = setting("X_NAMES", [], doc="a list")
    contexts: dict[str, str] = setting("X_CONTEXTS", {}, doc="a map")
    token: Secret | None = setting("X_TOKEN", None, doc="a secret")


def test_values_parse_into_their_types() -> None:
    loaded = load_settings(
        Example,
        {
            "X_FLAG": "yes",
            "X_COUNT": " 7 ",
            "X_RATIO": "1.5",
            "X_NAMES": "a, b,,c",
            "X_CONTEXTS": "us-east-1=ctx-a,us-west-2=ctx-b",
            "X_TOKEN": "t0ken",
            "X_REQUIRED": "here",
        },
    )
    assert loaded == Example(
        flag=True,
        count=7,
        ratio=1.5,
        names=["a", "b", "c"],
        contexts={"us-east-1": "ctx-a", "us-west-2": "ctx-b"},
        token=Secret("t0ken"),
        required="here",
    )


@pytest.mark.parametrize("spelling", ["true", "TRUE", "1", "yes", "on", "y"])
def test_usual_boolean_spellings(spelling: str) -> None:
    assert load_settings(Example, {"X_FLAG": spelling, "X_REQUIRED": "x"}).flag is True


def test_every_bad_value_is_reported_with_its_variable() -> None:
    with pytest.raises(SettingsError) as failure:
        load_settings(Example, {"X_FLAG": "maybe", "X_COUNT": "three", "X_CONTEXTS": "nokey"})
    message = str(failure.value)
    for variable in ("X_FLAG", "X_COUNT", "X_CONTEXTS", "X_REQUIRED is required"):
        assert variable in message
    assert len(failure.value.problems) == 4


def test_values_outside_their_bounds_name_the_variable_and_the_range() -> None:
    with pytest.raises(SettingsError) as failure:
        load_settings(Example, {"X_COUNT": "65", "X_RATIO": "0", "X_REQUIRED": "x"})
    assert failure.value.problems == [
        "X_COUNT must be between 1 and 64 (got 65)",
        "X_RATIO must be positive (got 0.0)",
    ]
    assert load_settings(Example, {"X_COUNT": "64", "X_RATIO": "0.001", "X_REQUIRED": "x"}).count == 64


@pytest.mark.parametrize("number", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_a_number_that_is_not_finite_is_refused_naming_the_variable(number: str) -> None:
    """nan compares false with every bound, so it would pass any range; inf is no limit."""
    with pytest.raises(SettingsError) as failure:
        load_settings(Example, {"X_RATIO": number, "X_REQUIRED": "x"})
    assert failure.value.problems == [f"X_RATIO: expected a finite number, got {number!r}"]


@pytest.mark.parametrize(
    ("bounds", "words"),
    [
        (Bounds(gt=0), "must be positive"),
        (Bounds(ge=0), "must not be negative"),
        (Bounds(ge=1), "must be at least 1"),
        (Bounds(ge=0, le=65535), "must be between 0 and 65535"),
        (Bounds(gt=0, lt=1), "must be above 0 and below 1"),
    ],
)
def test_bounds_say_their_range(bounds: Bounds, words: str) -> None:
    assert bounds.describe() == words


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-value\n")
    loaded = load_settings(Example, {"X_TOKEN_FILE": str(secret), "X_REQUIRED": "x"})
    assert reveal(loaded.token) == "s3cret-value"


def test_unreadable_secret_file_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as failure:
        load_settings(Example, {"X_TOKEN_FILE": str(tmp_path / "missing"), "X_REQUIRED": "x"})
    assert "X_TOKEN_FILE" in str(failure.value)
    assert str(tmp_path) not in str(failure.value)  # the reason, not the secret's location details


def test_secret_and_secret_file_together_are_ambiguous(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("a")
    with pytest.raises(SettingsError, match="X_TOKEN and X_TOKEN_FILE are both set"):
        load_settings(Example, {"X_TOKEN": "b", "X_TOKEN_FILE": str(secret), "X_REQUIRED": "x"})


def test_non_secret_has_no_file_variant(tmp_path: Path) -> None:
    source = tmp_path / "count"
    source.write_text("9")
    assert load_settings(Example, {"X_COUNT_FILE": str(source), "X_REQUIRED": "x"}).count == 3
    assert secret_variables(Example) == {"X_TOKEN"}


def test_a_secret_never_prints() -> None:
    secret = Secret("hunter2")
    shown = [repr(secret), str(secret), f"{secret}", f"{secret:>20}", json.dumps({"s": secret}, default=str)]
    assert not [text for text in shown if "hunter2" in text]
    assert secret.reveal() == "hunter2"
    with pytest.raises(TypeError):
        json.dumps(secret)  # an encoder without a fallback refuses it rather than printing it


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://a:4222, nats://b:4222", "nats://a:4222,nats://b:4222"),
        ("nats://user:pw@127.0.0.1:4222", "nats://**********@127.0.0.1:4222"),
        ("nats://s3cr3t-token@127.0.0.1:4222", "nats://**********@127.0.0.1:4222"),
        ("postgresql://app:pw@db:5432/platform", "postgresql://**********@db:5432/platform"),
        ("postgresql://app@db/platform?password=pw", "postgresql://**********@db/platform?**********"),
        (
            "host=db user=app password='p w' dbname=platform",
            "host=db user=app password=********** dbname=platform",
        ),
        ("https://x-access-token:tok@git.example.com/g.git", "https://**********@git.example.com/g.git"),
        # Unescaped "/", "#" or "?" in a password: a URL parser would read a path, fragment or query.
        ("postgresql://app:pa/ss@db/p", "postgresql://**********@db/p"),
        ("https://user:pa#ss@host/repo", "https://**********@host/repo"),
        ("nats://user:p?w@n1:4222,nats://n2:4222", "nats://**********@n1:4222,nats://n2:4222"),
        ("https://user:p@ss@host/repo?token=t", "https://**********@host/repo?**********"),
        ("git@github.com:org/gitops.git", "git@github.com:org/gitops.git"),
        ("https://[broken/g.git", "**********"),
    ],
)
def test_a_url_shows_without_its_credentials(url: str, shown: str) -> None:
    assert str(SecretUrl(url)) == shown
    assert SecretUrl(url).reveal() == url


def test_described_defaults_of_secrets_show_masked() -> None:
    @dataclass(frozen=True)
    class SecretDefaults:
        nothing: Secret | None = setting("S_NOTHING", None, doc="no default")
        server: SecretUrl = setting("S_SERVER", SecretUrl("nats://127.0.0.1:4222"), doc="a bare URL")
        login: SecretUrl = setting("S_LOGIN", SecretUrl("nats://user:pw@127.0.0.1:4222"), doc="credentials")
        key: Secret = setting("S_KEY", Secret("dev-signing-key-0123456789"), doc="a real secret")

    shown = {variable: default for variable, default, _doc in describe_settings(SecretDefaults)}
    assert shown == {
        "S_NOTHING": "",
        "S_SERVER": "nats://127.0.0.1:4222",
        "S_LOGIN": "nats://**********@127.0.0.1:4222",
        "S_KEY": "**********",
    }


# -- the kit's groups and the services composing them ---------------------------------------------


def test_the_kit_settings_compose_the_groups() -> None:
    for group in (SecuritySettings, TelemetrySettings, BusSettings, DatabaseSettings, ConsumerSettings):
        assert issubclass(PlatformSettings, group)


@pytest.mark.parametrize("service", BACKEND_SERVICES)
def test_every_backend_service_composes_the_kit_settings(service: str) -> None:
    assert issubclass(service_entry(service).settings_class, PlatformSettings)


def test_the_gateway_reads_no_database_or_consumer_settings() -> None:
    gateway = {variable for variable, _, _ in describe_settings(service_entry("gateway").settings_class)}
    assert "PLATFORM_NATS_URL" in gateway
    assert "PLATFORM_LOG_LEVEL" in gateway
    assert not {v for v in gateway if v.startswith(("PLATFORM_POSTGRES_", "PLATFORM_RECONCILE_"))}


def test_platform_settings_strict_mode_needs_a_database() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_POSTGRES_DSN"):
        load_settings(PlatformSettings, {"PLATFORM_ENV": "prod"})


def test_platform_settings_reject_nonsense_limits() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(PlatformSettings, {"PLATFORM_RECONCILE_MAX_ATTEMPTS": "0"})
    assert refused.value.problems == ["PLATFORM_RECONCILE_MAX_ATTEMPTS must be at least 1 (got 0)"]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        # No backoff: RetryPolicy.server_max_deliver overflowed at start-up.
        (
            {"PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS": "0"},
            "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS must be positive",
        ),
        (
            {"PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS": "0"},
            "PLATFORM_RECONCILE_MAX_BACKOFF_SECONDS must be positive",
        ),
        # A zero lease made the handler deadline 0: every handler cancelled.
        ({"PLATFORM_RECONCILE_TIMEOUT_SECONDS": "0"}, "PLATFORM_RECONCILE_TIMEOUT_SECONDS must be positive"),
        # Max age 0 is "for ever" to NATS; pruning inbox ids would let a replay apply twice.
        ({"PLATFORM_EVENTS_MAX_AGE_DAYS": "0"}, "PLATFORM_EVENTS_MAX_AGE_DAYS=0 keeps events for ever"),
        ({"PLATFORM_EVENTS_MAX_AGE_DAYS": "-1"}, "PLATFORM_EVENTS_MAX_AGE_DAYS must not be negative"),
        (
            {"PLATFORM_RETENTION_INTERVAL_SECONDS": "-1"},
            "PLATFORM_RETENTION_INTERVAL_SECONDS must not be negative",
        ),
        ({"PLATFORM_RETENTION_OUTBOX_DAYS": "-1"}, "PLATFORM_RETENTION_OUTBOX_DAYS must not be negative"),
        ({"PLATFORM_RETENTION_INBOX_DAYS": "-1"}, "PLATFORM_RETENTION_INBOX_DAYS must not be negative"),
        (
            {"PLATFORM_RETENTION_DEAD_LETTERS_DAYS": "-1"},
            "PLATFORM_RETENTION_DEAD_LETTERS_DAYS must not be negative",
        ),
        (
            {"PLATFORM_RETENTION_SERVICE_RECORDS_DAYS": "-1"},
            "PLATFORM_RETENTION_SERVICE_RECORDS_DAYS must not be negative",
        ),
        ({"PLATFORM_HEALTH_ADDRESS": "9100"}, "PLATFORM_HEALTH_ADDRESS: expected host:port"),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else "",
)
def test_platform_settings_refuse_values_that_break_at_run_time(
    environment: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(PlatformSettings, environment)
    assert [problem for problem in refused.value.problems if problem.startswith(message)]


def test_every_refused_value_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(
            PlatformSettings,
            {
                "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS": "0",
                "PLATFORM_RECONCILE_TIMEOUT_SECONDS": "0",
                "PLATFORM_RETENTION_OUTBOX_DAYS": "-1",
                # A rule between two settings, reported with the ranges.
                "PLATFORM_POSTGRES_POOL_WAIT_SECONDS": "5",
            },
        )
    assert sorted(refused.value.problems) == [
        "PLATFORM_POSTGRES_POOL_WAIT_SECONDS must be below PLATFORM_RPC_HANDLER_TIMEOUT_SECONDS",
        "PLATFORM_RECONCILE_RETRY_BACKOFF_SECONDS must be positive (got 0.0)",
        "PLATFORM_RECONCILE_TIMEOUT_SECONDS must be positive (got 0.0)",
        "PLATFORM_RETENTION_OUTBOX_DAYS must not be negative (got -1.0)",
    ]


def test_events_kept_for_ever_need_inbox_ids_kept_for_ever() -> None:
    settings = load_settings(
        PlatformSettings, {"PLATFORM_EVENTS_MAX_AGE_DAYS": "0", "PLATFORM_RETENTION_INTERVAL_SECONDS": "0"}
    )
    assert (settings.stream_max_age_days, settings.retention_interval_seconds) == (0, 0)


def test_the_approval_record_wait_must_end_before_the_rpc_deadline() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_APPROVAL_RECORD_WAIT_SECONDS must be below"):
        load_settings(ApprovalSettings, {"PLATFORM_APPROVAL_RECORD_WAIT_SECONDS": "4"})
    wait = load_settings(ApprovalSettings, {"PLATFORM_APPROVAL_RECORD_WAIT_SECONDS": "3.5"})
    assert wait.approval_record_wait_seconds == 3.5


@pytest.mark.parametrize(
    ("address", "expected"), [("127.0.0.1:8080", ("127.0.0.1", 8080)), (":9000", ("0.0.0.0", 9000))]
)
def test_listen_addresses(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address, "PLATFORM_ADDRESS") == expected


def test_bad_listen_address_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_ADDRESS"):
        split_address("localhost", "PLATFORM_ADDRESS")


# -- no secret value is ever shown ----------------------------------------------------------------

# Each secret's distinctive part; a URL's user info and password must not show either.
SECRET_VALUES = {
    "PLATFORM_POSTGRES_DSN": ("postgresql://pg-user-5e3:pg-pass-5e3@db.internal/platform", "5e3"),
    "PLATFORM_NATS_URL": ("nats://nats-user-7a1:nats-pass-7a1@nats.internal:4222", "7a1"),
    "PLATFORM_GITOPS_REPO_URL": ("https://x-access-token:git-url-token-9c2@git.example.com/g.git", "9c2"),
    "PLATFORM_GIT_TOKEN": ("git-token-4d8", "4d8"),
    "PLATFORM_JWT_HS256_SECRET": ("jwt-secret-2b6-" + "j" * 32, "2b6"),
    "PLATFORM_APPROVAL_HMAC_SECRET": ("approval-secret-8f0-" + "a" * 32, "8f0"),
    "PLATFORM_ATTESTATION_HMAC_SECRET": ("attestation-key-6e4-" + "t" * 32, "6e4"),
    "PLATFORM_NATS_NKEY_SEED": ("SUAnkey-seed-1d7", "1d7"),
}


def environment_with_secrets(settings_class: type[Any]) -> dict[str, str]:
    secrets = secret_variables(settings_class)
    assert secrets, "a service without secrets would make the checks below vacuous"
    assert secrets <= set(SECRET_VALUES), f"add a value for {secrets - set(SECRET_VALUES)}"
    environment = {variable: SECRET_VALUES[variable][0] for variable in secrets}
    # The renderer refuses to write a remote with credentials into Applications; Argo CD
    # pulls from this one instead.
    environment["PLATFORM_ARGOCD_GITOPS_REPO_URL"] = "https://git.example.com/g.git"
    return environment


def shown_secrets(text: str) -> list[str]:
    return [variable for variable, (_, mark) in SECRET_VALUES.items() if mark in text]


@pytest.mark.parametrize("service", SERVICES)
def test_settings_of_every_service_never_show_a_secret(service: str) -> None:
    settings_class = service_entry(service).settings_class
    settings = load_settings(settings_class, environment_with_secrets(settings_class))
    assert shown_secrets(repr(settings)) == []
    assert shown_secrets(str(settings)) == []
    assert shown_secrets(json.dumps(dataclasses.asdict(settings), default=str)) == []
    # Yet each secret is there for the code that asks for it.
    secrets = secret_variables(settings_class)
    assert secrets
    for variable in secrets:
        field = next(f for f in dataclasses.fields(settings_class) if f.metadata.get("env") == variable)
        assert reveal(getattr(settings, field.name)) == SECRET_VALUES[variable][0]


@pytest.mark.parametrize("service", SERVICES)
def test_a_refused_start_shows_no_secret(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """platformd <service> with every secret set and one value out of range: exit 2, the
    variable named, no secret in what it prints."""
    settings_class = service_entry(service).settings_class
    for variable, value in environment_with_secrets(settings_class).items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("PLATFORM_SHUTDOWN_TIMEOUT_SECONDS", "-1")
    assert platformd([service]) == 2
    printed = capsys.readouterr()
    assert "PLATFORM_SHUTDOWN_TIMEOUT_SECONDS must not be negative (got -1.0)" in printed.err
    assert shown_secrets(printed.out + printed.err) == []


def test_platformd_config_lists_the_groups_and_the_services_own_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert platformd(["config", "git-publisher"]) == 0
    listed = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    for group in (PlatformSettings, AttestationSettings):
        assert {variable for variable, _, _ in describe_settings(group)} <= set(listed)
    assert listed["PLATFORM_GIT_PUSH_ATTEMPTS"] == "5"
    assert listed["PLATFORM_NATS_URL"] == "nats://127.0.0.1:4222"
    assert listed["PLATFORM_GIT_TOKEN"] == "-"
