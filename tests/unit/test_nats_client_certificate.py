"""A NATS client certificate is presented or the process does not start: never silently dropped."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import certifi
import pytest

from libs.bus import tls_context
from libs.settings import BusSettings, PlatformSettings, SettingsError, load_settings


def test_a_service_with_a_client_certificate_but_no_key_refuses_to_start() -> None:
    with pytest.raises(SettingsError, match="PLATFORM_NATS_TLS_CERT_FILE and PLATFORM_NATS_TLS_KEY_FILE"):
        load_settings(PlatformSettings, {"PLATFORM_NATS_TLS_CERT_FILE": certifi.where()})


def test_a_certificate_without_a_key_fails_the_connection_instead_of_presenting_nothing() -> None:
    # Settings made in code skip the load-time rule; the TLS context still refuses.
    settings = dataclasses.replace(load_settings(BusSettings, {}), nats_tls_cert_file=Path(certifi.where()))
    with pytest.raises(ssl.SSLError):
        tls_context(settings)
