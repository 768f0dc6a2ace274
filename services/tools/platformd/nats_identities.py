"""NKEY seeds of the bus identities in a folder: what ``platformd dev`` gives its embedded
NATS and its processes (``state/nats/<identity>.nk``), and what tests use the same way.

Seeds are made once and kept, so a restarted stack keeps its identities (a downstream tool
holding ``subscriber.nk`` keeps working); each file is readable by its owner only, in a
folder only its owner may enter. Deleting a file makes a new key at the next start: that is
how a development key is rotated. A file that holds no seed (empty after a crash while it was
written, or edited by hand) is replaced the same way, with a warning.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from libs.settings import BusSettings
from services.tools.nats_permissions import identities, server_authorization

log = logging.getLogger(__name__)

SEED_SUFFIX = ".nk"
_OWNER_ONLY = 0o600
_OWNER_ONLY_FOLDER = 0o700


def _new_seed() -> bytes:
    return bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


def _is_seed(text: str) -> bool:
    try:
        public_key(text)
    except Exception:
        return False
    return True


def _kept_seed(path: Path) -> str:
    """The seed in ``path``, written first when there is none (or none that reads as a seed);
    the file is kept owner-only."""
    if path.exists():
        path.chmod(_OWNER_ONLY)
        seed = path.read_text(errors="replace").strip()
        if _is_seed(seed):
            return seed
        log.warning(
            "%s holds no NKEY seed (empty or damaged); made a new key for it: clients holding the old one must take the new file",
            path,
        )
    _write_owner_only(path, _new_seed() + b"\n")
    return path.read_text().strip()


def _write_owner_only(path: Path, content: bytes) -> None:
    """Written beside ``path`` and renamed over it: a crash leaves the old file or the new one."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _OWNER_ONLY)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


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
    folder.chmod(_OWNER_ONLY_FOLDER)
    model = identities(settings)
    seed_files = {identity.name: folder / f"{identity.name}{SEED_SUFFIX}" for identity in model}
    keys = {name: public_key(_kept_seed(path)) for name, path in seed_files.items()}
    prefixes = {identity.name: identity.permissions.inbox_prefix for identity in model}
    return BusIdentities(seed_files, prefixes, server_authorization(settings, keys))
