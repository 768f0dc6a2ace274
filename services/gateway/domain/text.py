"""Text the gateway takes from callers carries no control characters, wherever it comes
from (a path, a query, a token's claims): a NUL cannot even be stored, and a line break
or an escape sequence echoed into a log or a terminal is a forgery."""

from __future__ import annotations

import re

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def has_control_characters(value: str) -> bool:
    return _CONTROL_CHARACTERS.search(value) is not None
