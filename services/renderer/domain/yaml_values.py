"""The one way a value enters a rendered manifest: a YAML serializer that quotes everything.

Templates hold the structure; every value goes through :func:`flow` or :func:`block`. Strings
become double-quoted scalars with every character outside printable ASCII (and ``"`` and
``\\``) escaped, so no value can close its scalar, start a new key, line or document, or
smuggle in an anchor, alias or tag. The output is pure ASCII and, except for ``\\U`` escapes
of characters beyond the BMP, JSON. Mapping keys are sorted so equal input gives equal bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any


class UnrepresentableValue(ValueError):
    """A value of a type (or a float) that cannot be written so that it reads back the same."""


# Escapes that JSON and YAML share, for readable multi-line values.
_PLAIN_ASCII = re.compile(r"[ !#-\[\]-~]*")  # printable ASCII except '"' and '\\'
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar."""
    if _PLAIN_ASCII.fullmatch(text):
        return f'"{text}"'
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            # JSON would write a surrogate pair, which YAML decodes as two lone surrogates.
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise UnrepresentableValue("non-finite numbers cannot be rendered")
    text = repr(value)
    mantissa, exponent_mark, exponent = text.partition("e")
    # YAML 1.1 (PyYAML, go-yaml v2) reads "1e+16" as a string; "1.0e+16" is a float.
    if exponent_mark and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def _sorted_items(value: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    for key in value:
        if not isinstance(key, str):
            raise UnrepresentableValue(f"mapping keys must be strings, not {type(key).__name__}")
    return sorted(value.items())


def flow(value: Any) -> str:
    """``value`` on one line: a scalar, or a flow sequence / flow mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{quoted(key)}: {flow(item)}" for key, item in _sorted_items(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(item) for item in value) + "]"
    raise UnrepresentableValue(f"values of type {type(value).__name__} cannot be rendered")


def block(value: Any, indent: int) -> str:
    """The text that follows ``key:`` for ``value``, nested lines indented by ``indent`` spaces.

    Non-empty mappings and sequences become block collections on the following lines; any
    other value stays on the key's line (``" <flow>"``).
    """
    pad = " " * indent
    if isinstance(value, Mapping) and value:
        return "".join(
            f"\n{pad}{quoted(key)}:{block(item, indent + 2)}" for key, item in _sorted_items(value)
        )
    if isinstance(value, list | tuple) and value:
        nested_lead = "\n" + " " * (indent + 2)
        lines = []
        for item in value:
            nested = block(item, indent + 2)
            # A collection item starts on its dash's line: "- key: value" / "- - item".
            if nested.startswith(nested_lead):
                nested = " " + nested[len(nested_lead) :]
            lines.append(f"\n{pad}-{nested}")
        return "".join(lines)
    return " " + flow(value)
