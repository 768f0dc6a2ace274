"""NKEY seeds of the bus identities in a folder: what ``platformd dev`` gives its embedded
NATS and its processes (``state/nats/<identity>.nk``), and what tests use the same way.

Seeds are made once and kept, so a restarted stack keeps its identities (a downstream tool
holding ``subscriber.nk`` keeps working); each file is readable by its owner only. Deleting
a file makes a new key at the next start: that is how a development key is rotated.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from libs.settings import BusSettings
from services.tools.nats_permissions import identities, server_authorization

SEED_SUFFIX = ".nk"
_OWNER_ONLY = 0o600


def _new_seed() -> bytes:
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


def _kept_seed(path: Path) -> str:
    """The seed in ``path``, written first when there is none; the file is kept owner-only."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _OWNER_ONLY)
    except FileExistsError:
        path.chmod(_OWNER_ONLY)
        return path.read_text().strip()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_new_seed() + b"\n")
    return path.read_text().strip()


@dataclass(frozen=True)
class BusIdentities:
    """The seed file of every identity of the permission model, and the server's users."""

    seed_files: Mapping[str, Path]
    inbox_prefixes: Mapping[str, str]
    authorization: str

    def environment(self, identity: str) -> dict[str, str]:
        """The settings that make a process connect as ``identity``."""
        return {
            "PLATFORM_NATS_NKEY_SEED_FILE": str(self.seed_files[identity]),
            "PLATFORM_NATS_INBOX_PREFIX": self.inbox_prefixes[identity],
        }

    def service_environment(self, services: tuple[str, ...]) -> dict[str, dict[str, str]]:
        return {service: self.environment(service) for service in services}


def ensure_identities(folder: Path, settings: BusSettings) -> BusIdentities:
    """Seeds for every identity under ``folder`` (kept from earlier runs), and the
    ``authorization`` block that admits exactly them with their permissions."""
    folder.mkdir(parents=True, exist_ok=True)
    model = identities(settings)
    seed_files = {identity.name: folder / f"{identity.name}{SEED_SUFFIX}" for identity in model}
    keys = {name: public_key(_kept_seed(path)) for name, path in seed_files.items()}
    prefixes = {identity.name: identity.permissions.inbox_prefix for identity in model}
    return BusIdentities(seed_files, prefixes, server_authorization(settings, keys))
