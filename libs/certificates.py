"""When the TLS certificates a process is given expire, as a metric an alert can page on.

A process knows the certificate files its settings name (NATS mutual TLS, the CA bundles it
verifies NATS and Postgres with). Each is read again on a loop, so a certificate renewed in
place (cert-manager, a rotated Secret) is seen without a restart; a file holding several
certificates (a CA bundle) reports the one that expires first. A file that cannot be read
or holds no certificate is logged (its setting, not its content) and reported as expiring
now (0), so the alert fires for it too: a process that cannot read its CA will not connect
after its next restart either.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from libs.telemetry import replace_samples, table_gauge

log = logging.getLogger(__name__)

EXPIRY = table_gauge(
    "platform_certificate_expiry_timestamp_seconds",
    "When the first certificate of a TLS file this process uses expires (Unix time; 0: unreadable).",
    "certificate",
)


# How often the files are read again: renewals are days ahead of an expiry, not minutes.
REFRESH_SECONDS = 300.0

# The settings that name certificate files, and the settings attribute of each.
CERTIFICATE_SETTINGS = {
    "PLATFORM_NATS_TLS_CA_FILE": "nats_tls_ca_file",
    "PLATFORM_NATS_TLS_CERT_FILE": "nats_tls_cert_file",
    "PLATFORM_POSTGRES_SSLROOTCERT": "postgres_sslrootcert",
}


def configured_files(settings: Any) -> dict[str, Path | None]:
    """The certificate files ``settings`` (any process's) names, by setting."""
    return {
        variable: getattr(settings, attribute, None) for variable, attribute in CERTIFICATE_SETTINGS.items()
    }


def refresher(settings: Any) -> Callable[[], Awaitable[None]]:
    """The refresh of ``settings``' files, for :func:`libs.telemetry.refresh_every`."""
    files = configured_files(settings)

    async def refresh_files() -> None:
        refresh(files)

    return refresh_files


def first_expiry(path: Path) -> float:
    """The Unix time the first certificate in the PEM file at ``path`` expires."""
    certificates = x509.load_pem_x509_certificates(path.read_bytes())
    return min(certificate.not_valid_after_utc.timestamp() for certificate in certificates)


def refresh(files: Mapping[str, Path | None]) -> None:
    """Report ``files`` (the setting that names each, its path or None when not set)."""
    samples = []
    for setting, path in files.items():
        if path is None:
            continue
        try:
            expiry = first_expiry(path)
        except (OSError, ValueError):
            log.warning("certificate file unreadable", extra={"fields": {"setting": setting}})
            expiry = 0.0
        samples.append(((setting,), expiry))
    replace_samples(EXPIRY, samples)
