"""The config file: named contexts, each an API with its issuer, default team and output format.

    current-context: prod
    contexts:
      prod:
        api: https://platform.example.com
        issuer: https://login.example.com
        team: payments
        output: table

Written by ``platformctl login`` and ``platformctl config ...``; readable by hand. The
tokens of ``login`` are not in it: each context's are in ``tokens/<context>.json`` beside
it, readable by its owner only (:mod:`services.tools.platformctl.sessions`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.tools.platformctl.client import CliError, UsageError
from services.tools.platformctl.exit_codes import EXIT_USAGE
from services.tools.platformctl.output import FORMATS

# A context name is also a file name (its tokens): no path separators, no leading dot.
CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}")
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._:@-]")


@dataclass
class ContextEntry:
    api: str
    issuer: str | None = None
    team: str | None = None
    output: str | None = None


@dataclass
class CliConfig:
    path: Path
    current: str | None = None
    contexts: dict[str, ContextEntry] = field(default_factory=dict)

    @property
    def tokens_dir(self) -> Path:
        return self.path.parent / "tokens"


def check_context_name(name: str) -> str:
    if not CONTEXT_NAME.fullmatch(name):
        raise UsageError(
            f"invalid context name {name!r}: letters, digits and . _ : @ - (starting with a letter or digit)"
        )
    return name


def context_name_for(api: str) -> str:
    """The name ``login`` gives a new context: the API's host, then its port and path if it
    has them (``platform.example.com``, ``127.0.0.1:8080``, ``example.com_platform_v2``).
    An IPv6 address is written out in full (``0:0:0:0:0:0:0:1:8080``), so that it starts
    with a digit and the port stays apart from it."""
    parts = urlsplit(api)
    host = str(parts.hostname)
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.version == 6:
            host = ":".join(group.lstrip("0") or "0" for group in address.exploded.split(":"))
    path = parts.path.strip("/")
    name = host + (f":{parts.port}" if parts.port else "") + (f"_{path}" if path else "")
    return check_context_name(_NOT_IN_NAMES.sub("_", name)[:100])


def new_context_name(config: CliConfig, api: str) -> str:
    """The name of the context ``login`` creates for ``api``: :func:`context_name_for`,
    followed by ``-2``, ``-3``... while that name is another API's context, so that a
    sign-in never takes over the context of another API."""
    base = name = context_name_for(api)
    number = 1
    while (entry := config.contexts.get(name)) is not None and not same_api(entry.api, api):
        number += 1
        name = f"{base[:90]}-{number}"
    return name


def same_api(first: str, second: str) -> bool:
    return first.rstrip("/") == second.rstrip("/")


def load_config(path: Path) -> CliConfig:
    """The file's contexts; an absent file is a config without any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return CliConfig(path)
    except OSError as exc:
        raise CliError(
            f"{path}: cannot read the file ({exc.strerror or 'unreadable'})", exit_code=EXIT_USAGE
        ) from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise CliError(f"{path}: not valid YAML", exit_code=EXIT_USAGE) from None
    if not isinstance(document, dict):
        raise CliError(
            f"{path}: expected a mapping with 'contexts' and 'current-context'", exit_code=EXIT_USAGE
        )
    contexts = document.get("contexts") or {}
    if not isinstance(contexts, dict):
        raise CliError(f"{path}: 'contexts' must map names to contexts", exit_code=EXIT_USAGE)
    current = document.get("current-context")
    return CliConfig(
        path,
        current=str(current) if current else None,
        contexts={str(name): _entry(path, str(name), value) for name, value in contexts.items()},
    )


def _entry(path: Path, name: str, value: Any) -> ContextEntry:
    if not isinstance(value, dict) or not isinstance(value.get("api"), str):
        raise CliError(f"{path}: context {name!r} needs an 'api' URL", exit_code=EXIT_USAGE)
    output = value.get("output")
    if output is not None and output not in FORMATS:
        raise CliError(
            f"{path}: context {name!r}: output must be one of {', '.join(FORMATS)}", exit_code=EXIT_USAGE
        )
    return ContextEntry(
        api=value["api"],
        issuer=_optional_text(value.get("issuer")),
        team=_optional_text(value.get("team")),
        output=output,
    )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def save_config(config: CliConfig) -> None:
    contexts = {
        name: {key: value for key, value in asdict(entry).items() if value is not None}
        for name, entry in sorted(config.contexts.items())
    }
    document: dict[str, Any] = {"current-context": config.current, "contexts": contexts}
    write_private(config.path, yaml.safe_dump(document, sort_keys=False, default_flow_style=False))


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable and writable by its owner only (0600), whatever
    the umask, in a directory of this user's (see :func:`private_directory`; a missing one is
    created 0700). Written beside and renamed over the old file, so a reader never sees half
    a file and the permissions hold from the first byte. Both go through the directory
    checked, not its path again, and never follow a symbolic link planted as the new file."""
    partial = f".{path.name}.{secrets.token_hex(8)}.tmp"
    with _own_directory(path.parent, tighten=False) as directory:
        try:
            descriptor = os.open(partial, _NEW_FILE, 0o600, dir_fd=directory)
        except OSError as exc:
            raise _unwritable(path, exc) from None
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), 0o600)  # the umask may have taken bits away
                handle.write(text)
            os.replace(partial, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial, dir_fd=directory)
            raise _unwritable(path, exc) from None


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _unwritable(path: Path, exc: OSError) -> CliError:
    return CliError(f"{path}: cannot write the file ({exc.strerror or 'unwritable'})", exit_code=EXIT_USAGE)


def private_directory(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700), also when it already existed
    with looser permissions: the tokens in it must not be listable or readable by others."""
    with _own_directory(path, tighten=True):
        return path


def check_own_directory(path: Path) -> None:
    """Refuse ``path`` now if it exists and writing into it would be refused (see
    :func:`_own_directory`): before the user signs in for nothing."""
    if os.path.lexists(path):
        os.close(_opened_directory(path))


@contextlib.contextmanager
def _own_directory(path: Path, *, tighten: bool) -> Iterator[int]:
    """An open descriptor of ``path``, created 0700 when missing. It must be a directory of
    this user's and not a symbolic link: tokens written into a directory someone else
    controls (or into wherever a link planted there points) are theirs to read."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CliError(
            f"{path}: cannot create the directory ({exc.strerror or 'not allowed'})", exit_code=EXIT_USAGE
        ) from None
    descriptor = _opened_directory(path)
    try:
        if tighten:
            os.fchmod(descriptor, 0o700)
        yield descriptor
    finally:
        os.close(descriptor)


def _opened_directory(path: Path) -> int:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise CliError(f"{path}: {_not_usable(path, exc)}; {_OWN_DIRECTORY}", exit_code=EXIT_USAGE) from None
    owner = os.fstat(descriptor).st_uid
    if owner != os.geteuid():
        os.close(descriptor)
        raise CliError(
            f"{path}: belongs to another user (uid {owner}); {_OWN_DIRECTORY}", exit_code=EXIT_USAGE
        )
    return descriptor


_OWN_DIRECTORY = "platformctl keeps its config and tokens only in a directory of your own"


def _not_usable(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        return "is a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return "is not a directory"
    return f"cannot open the directory ({exc.strerror or 'not allowed'})"
