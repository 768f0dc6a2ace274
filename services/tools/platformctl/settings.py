"""Defaults of platformctl from the environment (read once, through the kit like every process)."""

from __future__ import annotations

from dataclasses import dataclass

from libs.settings import Secret, setting


@dataclass(frozen=True)
class CliSettings:
    api: str = setting("PLATFORM_API", "http://localhost:8080", doc="Base URL of the platform API (--api).")
    token: Secret | None = setting("PLATFORM_TOKEN", None, doc="Bearer token for the API (--token).")
    jwt_secret: Secret | None = setting(
        "PLATFORM_JWT_HS256_SECRET", None, doc="Default --secret of `token mint` (development)."
    )
    approval_secret: Secret | None = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET", None, doc="Default --approval-secret of `request approve`."
    )
