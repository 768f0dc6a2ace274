"""Typed settings: parsing, *_FILE secrets, and start-up errors that name the variable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from libs.settings import (
    PlatformSettings,
    SettingsError,
    describe_settings,
    load_settings,
    setting,
    split_address,
)
from services.approval.settings import ApprovalSettings

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Example:
    required: str = setting("X_REQUIRED", doc="required")
    flag: bool = setting("X_FLAG", False, doc="a boolean")
    count: int = setting("X_COUNT", 3, doc="an integer")
    ratio: float = setting("X_RATIO", 0.5, doc="a number")
    names: list[str] = setting("X_NAMES", [], doc="a list")
    contexts: dict[str, str] = setting("X_CONTEXTS", {}, doc="a map")
    token: str | None = setting("X_TOKEN", None, doc="a secret", secret=True)


def test_values_parse_into_their_types() -> None:
    loaded = load_settings(
        Example,
        {
            "X_FLAG": "yes",
            "X_COUNT": " 7 ",
            "X_RATIO": "1.5",
            "X_NAMES": "a, b,,c",
            "X_CONTEXTS": "us-east-1=ctx-a,us-west-2=ctx-b",
            "X_REQUIRED": "here",
        },
    )
    assert loaded == Example(
        flag=True,
        count=7,
        ratio=1.5,
        names=["a", "b", "c"],
        contexts={"us-east-1": "ctx-a", "us-west-2": "ctx-b"},
        token=None,
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


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-value\n")
    loaded = load_settings(Example, {"X_TOKEN_FILE": str(secret), "X_REQUIRED": "x"})
    assert loaded.token == "s3cret-value"


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


def test_platform_settings_strict_mode_needs_a_database() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_POSTGRES_DSN"):
        load_settings(PlatformSettings, {"PLATFORM_ENV": "prod"})


def test_platform_settings_reject_nonsense_limits() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_RECONCILE_MAX_ATTEMPTS"):
        load_settings(PlatformSettings, {"PLATFORM_RECONCILE_MAX_ATTEMPTS": "0"})


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
            },
        )
    assert len(refused.value.problems) == 3


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


@dataclass(frozen=True)
class SecretDefaults:
    nothing: str | None = setting("S_NOTHING", None, doc="no default", secret=True)
    server: str = setting("S_SERVER", "nats://127.0.0.1:4222", doc="a bare URL", secret=True)
    servers: str = setting("S_SERVERS", "nats://a:4222,nats://b:4222", doc="bare URLs", secret=True)
    login: str = setting("S_LOGIN", "nats://user:pw@127.0.0.1:4222", doc="credentials", secret=True)
    keyed: str = setting("S_KEYED", "https://example.com/x?token=abc", doc="a token", secret=True)
    key: str = setting("S_KEY", "dev-signing-key-0123456789", doc="a real secret", secret=True)


def test_described_defaults_hide_only_what_could_be_secret() -> None:
    shown = {variable: default for variable, default, _doc in describe_settings(SecretDefaults)}
    assert shown == {
        "S_NOTHING": "",
        "S_SERVER": "nats://127.0.0.1:4222",
        "S_SERVERS": "nats://a:4222,nats://b:4222",
        "S_LOGIN": "(secret)",
        "S_KEYED": "(secret)",
        "S_KEY": "(secret)",
    }
