"""platformctl's flag parsing and error formatting."""

from __future__ import annotations

import re
from pathlib import Path

import jwt
import pytest

from services.tools.platformctl import commands, context, event_commands, waiting
from services.tools.platformctl.browser_login import code_challenge
from services.tools.platformctl.client import CliError, UsageError, describe_details, redact
from services.tools.platformctl.commands import parse_hours, parse_labels
from services.tools.platformctl.config_file import (
    CliConfig,
    ContextEntry,
    check_context_name,
    context_name_for,
    load_config,
    new_context_name,
    save_config,
    write_private,
)
from services.tools.platformctl.main import build_parser
from services.tools.platformctl.oidc import bearer_token, require_https
from services.tools.platformctl.tokens import mint, parse_duration, split_teams


@pytest.mark.parametrize(
    ("text", "seconds"), [("1h", 3600), ("30m", 1800), ("3600s", 3600), ("90", 90), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5", "0", "1w", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_teams_repeat_or_split_on_commas() -> None:
    assert split_teams(["a", "b,c", " d , "]) == ["a", "b", "c", "d"]
    assert split_teams(None) is None


def test_labels_and_hours() -> None:
    assert parse_labels("pr=42, tier=web") == {"pr": "42", "tier": "web"}
    assert parse_labels(None) is None
    with pytest.raises(CliError, match="--labels"):
        parse_labels("pr")
    assert parse_hours("24") == 24
    assert parse_hours("24h") == 24
    with pytest.raises(CliError, match="--ttl"):
        parse_hours("a day")


def test_minted_claims() -> None:
    token = mint(
        secret="s" * 32,
        subject="u",
        actor="a@example.com",
        role="admin",
        ttl_seconds=60,
        teams=["x"],
        issuer="iss",
        audience="aud",
        now=1000,
    )
    claims = jwt.decode(token, "s" * 32, algorithms=["HS256"], audience="aud", options={"verify_exp": False})
    assert claims == {
        "sub": "u",
        "email": "a@example.com",
        "role": "admin",
        "teams": ["x"],
        "iss": "iss",
        "aud": "aud",
        "iat": 1000,
        "exp": 1060,
    }


def test_error_details_and_urls_for_messages() -> None:
    details = [{"field": "team", "message": "is required"}, {"field": "region", "message": "unknown"}]
    assert describe_details(details) == "team: is required; region: unknown"
    assert redact("https://user:secret@api.example.com:8443/x") == "https://api.example.com:8443/x"
    assert redact("http://localhost:8080") == "http://localhost:8080"


@pytest.mark.parametrize(
    "argv",
    [
        ["request", "approve", "--id", "req-1", "--approval-secret", "s"],
        ["request", "approve", "--id=req-1", "--approval-secret=s"],
    ],
)
def test_approve_takes_both_flag_forms(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.id, args.approval_secret, args.run) == ("req-1", "s", commands.request_approve)


def test_every_request_command_is_registered() -> None:
    parser = build_parser()
    for argv, run in (
        (["request", "reject", "--id", "r", "--reason=no"], commands.request_reject),
        (["request", "reconcile", "--id", "r", "--if-version", "3"], commands.request_reconcile),
        (["request", "extend", "--id", "r", "--ttl", "48h"], commands.request_extend),
        (["request", "delete", "--id=r"], commands.request_delete),
        (["request", "wait", "--id", "r", "--for", "deleted"], commands.request_wait),
        (["events", "tail", "--count", "2"], event_commands.events_tail),
        (["events", "dlq", "--service=intake", "--all"], event_commands.events_dlq),
        (["events", "replay", "--service", "intake", "--id", "7"], event_commands.events_replay),
        (["--api=http://x", "-o", "yaml", "request", "get", "--id", "r"], commands.request_get),
    ):
        assert parser.parse_args(argv).run is run, argv


@pytest.mark.parametrize(
    ("status", "target", "outcome"),
    [
        ("ready", "ready", context.EXIT_OK),
        ("failed", "ready", context.EXIT_FAILED),
        ("rejected", "ready", context.EXIT_FAILED),
        ("deleting", "ready", context.EXIT_FAILED),
        ("reconciling", "ready", None),
        ("deleting", "deleted", None),
        ("expiring", "deleted", None),
        ("deleted", "deleted", context.EXIT_OK),
        ("failed", "deleted", context.EXIT_FAILED),
        ("pending_approval", "approved", None),
        ("queued", "approved", context.EXIT_OK),
        ("rejected", "approved", context.EXIT_FAILED),
    ],
)
def test_what_wait_makes_of_a_status(status: str, target: str, outcome: int | None) -> None:
    assert waiting.wait_outcome(status, target) == outcome


# -- signing in and contexts -----------------------------------------------------------------------


def test_pkce_challenge_is_s256() -> None:
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_token_sent_is_the_one_meant_for_the_api() -> None:
    def signed(audience: str) -> str:
        return jwt.encode({"aud": audience, "exp": 2000}, "k" * 32, algorithm="HS256")

    for_api, for_client = signed("platform"), signed("platformctl")
    # An access token for the API is sent, expiring when the provider says.
    answer = {"access_token": for_api, "id_token": for_client, "expires_in": 60}
    assert bearer_token(answer, "platform", now=1000) == (for_api, 1060)
    # An access token that is not (opaque, or for another audience): the ID token, if it is.
    assert bearer_token({"access_token": "opaque", "id_token": for_client}, "platformctl", now=1000) == (
        for_client,
        2000,
    )
    # Neither is: the access token, and the gateway says what is wrong with it.
    assert bearer_token({"access_token": "opaque", "id_token": for_client}, "other", 1000) == ("opaque", None)


@pytest.mark.parametrize(
    "url", ["https://login.example.com", "http://127.0.0.1:8080", "http://[::1]:8080/x", "http://localhost"]
)
def test_signing_in_over_https_or_on_this_machine(url: str) -> None:
    require_https(url, "the API")


@pytest.mark.parametrize(
    "url", ["http://login.example.com", "http://10.0.0.1", "http://localhost.example.com", "ftp://127.0.0.1"]
)
def test_plain_http_elsewhere_is_refused(url: str) -> None:
    with pytest.raises(CliError, match="is not https"):
        require_https(url, "the API")


def test_context_names_from_the_api_and_their_limits() -> None:
    assert context_name_for("https://platform.example.com") == "platform.example.com"
    assert context_name_for("http://127.0.0.1:8080/") == "127.0.0.1:8080"
    assert context_name_for("http://[::1]:8080") == "0:0:0:0:0:0:0:1:8080"
    assert context_name_for("https://[2001:db8::a]/") == "2001:db8:0:0:0:0:0:a"
    assert context_name_for("https://example.com/team-a/api/") == "example.com_team-a_api"
    assert context_name_for("https://example.com:8443/team b") == "example.com:8443_team_b"
    assert len(context_name_for(f"https://example.com/{'x' * 200}")) == 100
    for bad in ("../x", ".hidden", "a/b", ""):
        with pytest.raises(UsageError, match="invalid context name"):
            check_context_name(bad)


def test_a_new_context_never_takes_over_another_apis(tmp_path: Path) -> None:
    config = CliConfig(tmp_path / "config.yaml")
    for api in ("https://example.com/team-a", "https://example.com/team-b", "http://example.com/team-a"):
        name = new_context_name(config, api)
        config.contexts[name] = ContextEntry(api=api)
    assert {name: entry.api for name, entry in config.contexts.items()} == {
        "example.com_team-a": "https://example.com/team-a",
        "example.com_team-b": "https://example.com/team-b",
        "example.com_team-a-2": "http://example.com/team-a",
    }
    # Signing in to an API again finds its context.
    assert new_context_name(config, "http://example.com/team-a/") == "example.com_team-a-2"


def test_the_config_file_round_trips_and_bad_ones_are_named(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert load_config(path).contexts == {}  # none yet
    config = load_config(path)
    config.contexts["prod"] = ContextEntry(api="https://platform.example.com", team="payments", output="yaml")
    config.current = "prod"
    save_config(config)
    assert load_config(path) == config
    for text, problem in (
        ("contexts: [1, 2]", "'contexts' must map names to contexts"),
        ("contexts: {prod: {team: x}}", "context 'prod' needs an 'api' URL"),
        ("contexts: {prod: {api: x, output: xml}}", "output must be one of json, yaml, table"),
        ("contexts: {prod: [", "not valid YAML"),
    ):
        path.write_text(text)
        with pytest.raises(CliError, match=re.escape(problem)):
            load_config(path)


def test_a_link_planted_as_the_config_file_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_text("theirs")
    config = tmp_path / "platformctl" / "config.yaml"
    config.parent.mkdir()
    config.symlink_to(target)
    write_private(config, "mine")
    assert (config.is_symlink(), config.read_text(), target.read_text()) == (False, "mine", "theirs")
    assert sorted(path.name for path in config.parent.iterdir()) == ["config.yaml"]


def test_context_flag_on_every_command_and_the_contexts_default_team() -> None:
    parser = build_parser()
    for argv in (
        ["--context", "prod", "classes"],
        ["classes", "--context=prod"],
        ["logout", "--context", "prod"],
    ):
        assert parser.parse_args(argv).context == "prod", argv
    create = ["request", "create", "--app", "a", "--class", "c", "--region", "r", "--ttl", "1"]
    create += ["--owner", "o", "--repo", "https://example.com/r.git"]
    with pytest.raises(UsageError, match="required: --team"):
        commands.create_body(parser.parse_args(create))  # no default team to fall back on
    with_default = build_parser(default_team="payments")
    assert commands.create_body(with_default.parse_args(create))["team"] == "payments"
    assert commands.create_body(with_default.parse_args([*create, "--team", "search"]))["team"] == "search"
    change = parser.parse_args(["config", "set-context", "prod", "--api", "https://x", "--output", "yaml"])
    assert (change.name, change.context_api, change.context_output, change.api) == (
        "prod",
        "https://x",
        "yaml",
        None,
    )
