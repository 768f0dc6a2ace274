"""``-o jsonpath='{.status}'``: a small subset of kubectl's JSONPath templates.

The subset: text with ``{...}`` expressions in it; an expression is a path of ``.field``
steps, ``[n]`` indexes (``[-1]`` counts from the end) and ``[*]`` (every item), optionally
starting with ``$``. ``{.items[*].id}`` prints every id, separated by spaces. A string is
printed as it is, anything else as compact JSON, null as nothing. A field that is not there
is an error, so a misspelt path fails the script instead of printing an empty value.
Filters (``?()``), slices and recursive descent (``..``) are not supported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

PREFIX = "jsonpath="
_EXPRESSION = re.compile(r"\{([^{}]*)\}")
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\*|-?\d+)\]")

Step = str | int | None  # a field, an index, or None for [*]


class JsonPathError(ValueError):
    """A template outside the subset, or a path the value does not have."""


@dataclass(frozen=True)
class Template:
    text: str
    # Literal text and the paths between it: text, path, text, path, ..., text.
    parts: tuple[str | tuple[Step, ...], ...]

    def render(self, value: Any) -> str:
        return "".join(part if isinstance(part, str) else _shown(select(value, part)) for part in self.parts)


def parse(text: str) -> Template:
    """``text`` as a template (``{.status}``, ``id={.id}``); :class:`JsonPathError` if it is not one."""
    parts: list[str | tuple[Step, ...]] = []
    position = 0
    for match in _EXPRESSION.finditer(text):
        parts.append(text[position : match.start()])
        parts.append(parse_path(match.group(1)))
        position = match.end()
    rest = text[position:]
    if "{" in rest or "}" in rest or not any(isinstance(part, tuple) for part in parts):
        raise JsonPathError(f"expected a template such as '{{.status}}' or '{{.items[*].id}}', got {text!r}")
    parts.append(rest)
    return Template(text, tuple(parts))


def parse_path(expression: str) -> tuple[Step, ...]:
    path = expression.strip().removeprefix("$")
    steps: list[Step] = []
    position = 0
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise JsonPathError(
                f"{{{expression}}}: only .field, [n] and [*] are supported (at {path[position:]!r})"
            )
        field, index = match.groups()
        steps.append(field if field is not None else (None if index == "*" else int(index)))
        position = match.end()
    return tuple(steps)


def select(value: Any, path: tuple[Step, ...]) -> list[Any]:
    """Every value ``path`` leads to (several after a ``[*]``)."""
    found = [value]
    for step in path:
        found = [item for current in found for item in _step(current, step)]
    return found


def _step(value: Any, step: Step) -> list[Any]:
    if step is None:
        if isinstance(value, list):
            return list(value)
        if isinstance(value, dict):
            return list(value.values())
        raise JsonPathError("[*] applies to a list or an object")
    if isinstance(step, int):
        if not isinstance(value, list) or not -len(value) <= step < len(value):
            raise JsonPathError(f"no item [{step}]")
        return [value[step]]
    if not isinstance(value, dict) or step not in value:
        raise JsonPathError(f"no field {step!r}")
    return [value[step]]


def _shown(values: list[Any]) -> str:
    return " ".join(
        value if isinstance(value, str) else "" if value is None else json.dumps(value, ensure_ascii=False)
        for value in values
    )
