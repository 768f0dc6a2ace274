"""The certificate-expiry gauge: the first certificate of each configured file, read again on
every refresh; an unreadable file reads as expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from libs import certificates
from libs.telemetry import REGISTRY
from tests.support.alerts import alert_expr, evaluate, registry_samples


def pem_certificate(days: float) -> bytes:
    """A self-signed certificate valid from an hour ago until ``days`` from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test-{days}")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def expiries() -> dict[str, float]:
    return {
        sample.labels["certificate"]: sample.value
        for sample in registry_samples(REGISTRY)
        if sample.name == "platform_certificate_expiry_timestamp_seconds"
    }


def test_a_bundle_reports_its_first_expiry_and_a_renewal_is_seen(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(pem_certificate(90) + pem_certificate(3))
    certificates.refresh({"PLATFORM_NATS_TLS_CA_FILE": bundle, "PLATFORM_NATS_TLS_CERT_FILE": None})
    soon = expiries()
    assert set(soon) == {"PLATFORM_NATS_TLS_CA_FILE"}  # a setting not set reports nothing
    assert abs(soon["PLATFORM_NATS_TLS_CA_FILE"] - (datetime.now(UTC) + timedelta(days=3)).timestamp()) < 60
    fired = evaluate(alert_expr("PlatformCertificateExpiringSoon"), registry_samples(REGISTRY))
    assert ("", "PLATFORM_NATS_TLS_CA_FILE") in fired

    bundle.write_bytes(pem_certificate(90))  # renewed in place
    certificates.refresh({"PLATFORM_NATS_TLS_CA_FILE": bundle})
    assert expiries()["PLATFORM_NATS_TLS_CA_FILE"] > (datetime.now(UTC) + timedelta(days=89)).timestamp()
    assert not evaluate(alert_expr("PlatformCertificateExpiringSoon"), registry_samples(REGISTRY))


def test_an_unreadable_file_reads_as_expired(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    certificates.refresh(
        {"PLATFORM_POSTGRES_SSLROOTCERT": not_pem, "PLATFORM_NATS_TLS_CA_FILE": tmp_path / "gone.pem"}
    )
    assert expiries() == {"PLATFORM_POSTGRES_SSLROOTCERT": 0.0, "PLATFORM_NATS_TLS_CA_FILE": 0.0}
    fired = evaluate(alert_expr("PlatformCertificateExpiringSoon"), registry_samples(REGISTRY))
    assert set(fired) == {("", "PLATFORM_POSTGRES_SSLROOTCERT"), ("", "PLATFORM_NATS_TLS_CA_FILE")}
    certificates.refresh({})
