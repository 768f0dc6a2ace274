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
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.tools.platformctl.client import CliError, UsageError
from services.tools.platformctl.output import FORMATS

# A context name is also a file name (its tokens): no path separators, no leading dot.
CONTEXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}")


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
    """The name ``login`` gives a new context: the API's host, and its port if it has one."""
    parts = urlsplit(api)
    name = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return check_context_name(name)


def same_api(first: str, second: str) -> bool:
    return first.rstrip("/") == second.rstrip("/")


def load_config(path: Path) -> CliConfig:
    """The file's contexts; an absent file is a config without any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return CliConfig(path)
    except OSError as exc:
        raise CliError(f"{path}: cannot read the file ({exc.strerror or 'unreadable'})") from None
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise CliError(f"{path}: not valid YAML") from None
    if not isinstance(document, dict):
        raise CliError(f"{path}: expected a mapping with 'contexts' and 'current-context'")
    contexts = document.get("contexts") or {}
    if not isinstance(contexts, dict):
        raise CliError(f"{path}: 'contexts' must map names to contexts")
    current = document.get("current-context")
    return CliConfig(
        path,
        current=str(current) if current else None,
        contexts={str(name): _entry(path, str(name), value) for name, value in contexts.items()},
    )


def _entry(path: Path, name: str, value: Any) -> ContextEntry:
    if not isinstance(value, dict) or not isinstance(value.get("api"), str):
        raise CliError(f"{path}: context {name!r} needs an 'api' URL")
    output = value.get("output")
    if output is not None and output not in FORMATS:
        raise CliError(f"{path}: context {name!r}: output must be one of {', '.join(FORMATS)}")
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
    the umask; a missing directory is created 0700. Written beside and renamed over the old
    file, so a reader never sees half a file and the permissions hold from the first byte."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a leftover partial file keeps its mode otherwise
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise CliError(f"{path}: cannot write the file ({exc.strerror or 'unwritable'})") from None


def private_directory(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700), also when it already existed
    with looser permissions: the tokens in it must not be listable or readable by others."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
    except OSError as exc:
        raise CliError(f"{path}: cannot create the directory ({exc.strerror or 'not allowed'})") from None
    return path
