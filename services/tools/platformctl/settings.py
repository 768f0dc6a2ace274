"""Defaults of platformctl from the environment (read once, through the kit like every process).

``PLATFORM_API`` and ``PLATFORM_TOKEN`` have no default here: when they are unset the
current context of the config file decides (see :mod:`services.tools.platformctl.targets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from libs.settings import Secret, setting


@dataclass(frozen=True)
class CliSettings:
    api: str | None = setting(
        "PLATFORM_API", None, doc="Base URL of the platform API (--api); wins over the context's."
    )
    token: Secret | None = setting(
        "PLATFORM_TOKEN", None, doc="Bearer token for the API (--token); wins over a `login` token."
    )
    jwt_secret: Secret | None = setting(
        "PLATFORM_JWT_HS256_SECRET", None, doc="Default --secret of `token mint` (development)."
    )
    approval_secret: Secret | None = setting(
        "PLATFORM_APPROVAL_HMAC_SECRET", None, doc="Default --approval-secret of `request approve`."
    )
    config: Path | None = setting(
        "PLATFORMCTL_CONFIG",
        None,
        doc="The config file with the contexts (default $XDG_CONFIG_HOME/platformctl/config.yaml); "
        "tokens of `login` are kept beside it, in tokens/.",
    )
    config_home: Path | None = setting(
        "XDG_CONFIG_HOME", None, doc="Base directory of user configuration (default ~/.config)."
    )

    @property
    def config_path(self) -> Path:
        if self.config is not None:
            return self.config
        return (self.config_home or Path.home() / ".config") / "platformctl" / "config.yaml"
