"""A running service reports when the TLS files its settings name expire (real NATS and
Postgres; the Postgres CA is configured with TLS off, so the connection stays plain)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from libs.telemetry import REGISTRY
from tests.support.alerts import alert_expr, evaluate, registry_samples
from tests.support.bus import wait_until
from tests.support.services import running_service
from tests.unit.test_certificates import pem_certificate


async def test_a_service_reports_the_expiry_of_its_ca_file(
    platform_env: dict[str, str], tmp_path: Path
) -> None:
    ca = tmp_path / "postgres-ca.pem"
    ca.write_bytes(pem_certificate(5))
    environment = {
        **platform_env,
        "PLATFORM_POSTGRES_SSLROOTCERT": str(ca),
        "PLATFORM_POSTGRES_SSLMODE": "disable",
    }
    expected = (datetime.now(UTC) + timedelta(days=5)).timestamp()

    async def reported() -> float | None:
        return next(
            (
                sample.value
                for sample in registry_samples(REGISTRY)
                if sample.name == "platform_certificate_expiry_timestamp_seconds"
                and sample.labels == {"certificate": "PLATFORM_POSTGRES_SSLROOTCERT"}
            ),
            None,
        )

    async with running_service("approval", environment):
        expiry = await wait_until(reported, what="the CA file's expiry reported")
        assert abs(expiry - expected) < 60
        fired = evaluate(alert_expr("PlatformCertificateExpiringSoon"), registry_samples(REGISTRY))
        assert ("", "PLATFORM_POSTGRES_SSLROOTCERT") in fired
