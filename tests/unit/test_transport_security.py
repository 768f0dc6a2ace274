"""How a process reaches NATS and Postgres securely: its NKEY identity and inbox prefix, the
NATS TLS files, and Postgres' sslmode and root certificate, from settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from psycopg.conninfo import conninfo_to_dict

from libs.bus import identity_options
from libs.settings import BusSettings, DatabaseSettings, SettingsError, load_settings


def test_without_identity_settings_the_connection_is_anonymous_and_plain() -> None:
    options = identity_options(load_settings(BusSettings, {}))
    assert options == {"inbox_prefix": "_INBOX"}


def test_the_seed_comes_from_its_file_and_never_prints(tmp_path: Path) -> None:
    seed = tmp_path / "intake.nk"
    seed.write_text("SUAEXAMPLESEED-4q2\n")
    settings = load_settings(
        BusSettings,
        {"PLATFORM_NATS_NKEY_SEED_FILE": str(seed), "PLATFORM_NATS_INBOX_PREFIX": "_INBOX_intake"},
    )
    options = identity_options(settings)
    assert options == {"inbox_prefix": "_INBOX_intake", "nkeys_seed_str": "SUAEXAMPLESEED-4q2"}
    assert "4q2" not in repr(settings)


def test_nats_tls_verifies_the_server_with_the_given_ca() -> None:
    settings = load_settings(BusSettings, {"PLATFORM_NATS_TLS_CA_FILE": certifi.where()})
    context = identity_options(settings)["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_NATS_TLS_CERT_FILE and PLATFORM_NATS_TLS_KEY_FILE"):
        load_settings(BusSettings, {"PLATFORM_NATS_TLS_CERT_FILE": "/etc/platform/client.pem"})


def test_postgres_tls_settings_win_over_the_dsn() -> None:
    settings = load_settings(
        DatabaseSettings,
        {
            "PLATFORM_POSTGRES_DSN": "postgresql://svc:pw@db.internal/platform?sslmode=disable",
            "PLATFORM_POSTGRES_SSLMODE": "verify-full",
            "PLATFORM_POSTGRES_SSLROOTCERT": "/etc/platform/rds-ca.pem",
        },
    )
    params = conninfo_to_dict(settings.require_dsn())
    assert params["sslmode"] == "verify-full"
    assert params["sslrootcert"] == "/etc/platform/rds-ca.pem"
    assert (params["host"], params["dbname"], params["user"]) == ("db.internal", "platform", "svc")


def test_without_postgres_tls_settings_the_dsn_is_used_as_given() -> None:
    dsn = "postgresql://svc@db.internal/platform?sslmode=require"
    settings = load_settings(DatabaseSettings, {"PLATFORM_POSTGRES_DSN": dsn})
    assert settings.require_dsn() == dsn
