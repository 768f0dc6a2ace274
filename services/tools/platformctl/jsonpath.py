"""``-o jsonpath='{.status}'``: a small subset of kubectl's JSONPath templates.

The subset: text with ``{...}`` expressions in it; an expression is a path of ``.field``
steps, ``['key']`` steps (keys with dots or slashes, ``['app.kubernetes.io/name']``),
``[n]`` indexes (``[-1]`` counts from the end) and ``[*]`` (every item), optionally starting
with ``$``. ``{.items[*].id}`` prints every id, separated by spaces. A string is printed as
it is, anything else as compact JSON, null as nothing. As in kubectl, a field or item that
is not there prints nothing (an item of ``[*]`` lacking it is left out); :meth:`unmatched`
names the expressions that found nothing at all, so a misspelt path can be reported.
Filters (``?()``), slices and recursive descent (``..``) are not supported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

PREFIX = "jsonpath="
_EXPRESSION = re.compile(r"\{([^{}]*)\}")
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\['([^']*)'\]|\[(\*|-?\d+)\]")

Step = str | int | None  # a field, an index, or None for [*]


class JsonPathError(ValueError):
    """A template outside the subset."""


@dataclass(frozen=True)
class Template:
    text: str
    # Literal text and the paths between it: text, path, text, path, ..., text.
    parts: tuple[str | tuple[Step, ...], ...]

    def render(self, value: Any) -> str:
        return "".join(part if isinstance(part, str) else _shown(select(value, part)) for part in self.parts)

    def unmatched(self, value: Any) -> list[str]:
        """The expressions that found nothing in ``value`` (a misspelt field, most likely)."""
        expressions = [match.group(0) for match in _EXPRESSION.finditer(self.text)]
        paths = [part for part in self.parts if not isinstance(part, str)]
        return [text for text, path in zip(expressions, paths, strict=True) if not select(value, path)]


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
                f"{{{expression}}}: only .field, ['key'], [n] and [*] are supported (at {path[position:]!r})"
            )
        field, key, index = match.groups()
        if field is not None or key is not None:
            steps.append(field if field is not None else key)
        else:
            steps.append(None if index == "*" else int(index))
        position = match.end()
    return tuple(steps)


def select(value: Any, path: tuple[Step, ...]) -> list[Any]:
    """Every value ``path`` leads to (several after a ``[*]``)."""
    found = [value]
    for step in path:
        found = [item for current in found for item in _step(current, step)]
    return found


def _step(value: Any, step: Step) -> list[Any]:
    """What one step leads to from ``value``: nothing when it is not there."""
    if step is None:
        if isinstance(value, list):
            return list(value)
        return list(value.values()) if isinstance(value, dict) else []
    if isinstance(step, int):
        return [value[step]] if isinstance(value, list) and -len(value) <= step < len(value) else []
    return [value[step]] if isinstance(value, dict) and step in value else []


def _shown(values: list[Any]) -> str:
    return " ".join(
        value if isinstance(value, str) else "" if value is None else json.dumps(value, ensure_ascii=False)
        for value in values
    )
