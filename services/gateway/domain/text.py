"""Text the gateway takes from callers carries no control characters, wherever it comes
from (a path, a query, a token's claims): a NUL cannot even be stored, and a line break
or an escape sequence echoed into a log or a terminal is a forgery."""

from __future__ import annotations

import re
import unicodedata

# C0, DEL and C1 (U+0085 NEL among them), and the Unicode line and paragraph separators:
# each can end a line in some reader.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def has_control_characters(value: str) -> bool:
    return _CONTROL_CHARACTERS.search(value) is not None


def has_format_characters(value: str) -> bool:
    """Invisible format characters (Unicode category Cf: bidi controls, zero-width spaces
    and joiners, the BOM): ``value`` would read differently from what it is, or like
    another name."""
    return any(unicodedata.category(character) == "Cf" for character in value)
