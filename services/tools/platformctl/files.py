"""Reading the YAML or JSON files commands take with ``-f`` (``-`` is stdin)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from services.tools.platformctl.client import CliError
from services.tools.platformctl.exit_codes import EXIT_USAGE


def load_documents(source: str) -> list[Any]:
    """Every YAML document of ``source`` (JSON is YAML too); nothing was sent yet, so a file
    that cannot be read or parsed is a usage error."""
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise CliError(
            f"-f {source}: cannot read the file ({exc.strerror or 'unreadable'})", exit_code=EXIT_USAGE
        ) from None
    except UnicodeDecodeError as exc:
        raise CliError(
            f"-f {source}: not UTF-8 text (byte {exc.start} cannot be decoded)", exit_code=EXIT_USAGE
        ) from None
    try:
        return [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CliError(f"-f {source}: not valid YAML or JSON{where}", exit_code=EXIT_USAGE) from None


def load_object(source: str) -> dict[str, Any]:
    """The one object (a mapping) ``source`` holds."""
    documents = load_documents(source)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise CliError(f"-f {source}: expected one object (a mapping of fields)", exit_code=EXIT_USAGE)
    return documents[0]
