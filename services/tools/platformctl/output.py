"""Rendering API resources as JSON (scripts), YAML (people who like it), tables (terminals)
or the fields a ``jsonpath=`` template picks (a script that needs one value)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

import yaml

from services.tools.platformctl import jsonpath
from services.tools.platformctl.client import UsageError

FORMATS = ("json", "yaml", "table")
OUTPUT_HELP = "json, yaml, table or jsonpath='{.field}' (see docs/cli.md)"


def output_format(text: str) -> str:
    """``-o``'s value: one of FORMATS or ``jsonpath=<template>``, checked before anything is sent."""
    if text in FORMATS:
        return text
    if text.startswith(jsonpath.PREFIX):
        try:
            jsonpath.parse(text.removeprefix(jsonpath.PREFIX))
        except jsonpath.JsonPathError as exc:
            raise argparse.ArgumentTypeError(f"jsonpath: {exc}") from None
        return text
    raise argparse.ArgumentTypeError(f"expected json, yaml, table or jsonpath=TEMPLATE, got {text!r}")


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def _join(values: Any) -> str:
    return (
        ",".join(str(v) for v in values)
        if isinstance(values, list)
        else ("" if values is None else str(values))
    )


CLASS_COLUMNS: list[Column] = [
    ("NAME", lambda c: c.get("name")),
    ("REGIONS", lambda c: _join(c.get("allowed_regions"))),
    ("APPROVAL", lambda c: "yes" if c.get("requires_approval") else "no"),
    ("AUTO-RECONCILE", lambda c: "yes" if c.get("auto_reconcile") else "no"),
    ("MAX-TTL-H", lambda c: c.get("max_ttl_hours")),
    ("QUOTA", lambda c: c.get("quota_profile")),
    ("USD/MONTH", lambda c: c.get("estimated_monthly_cost_usd")),
]

REQUEST_COLUMNS: list[Column] = [
    ("ID", lambda r: r.get("id")),
    ("APP", lambda r: r.get("app")),
    ("TEAM", lambda r: r.get("team")),
    ("CLASS", lambda r: r.get("class")),
    ("REGION", lambda r: r.get("region")),
    ("STATUS", lambda r: r.get("status")),
    ("CREATED", lambda r: r.get("created_at")),
]

EVENT_COLUMNS: list[Column] = [
    ("TIME", lambda e: e.get("time")),
    ("TYPE", lambda e: e.get("type")),
    ("SOURCE", lambda e: e.get("source")),
    ("GEN", lambda e: e.get("generation")),
    ("APPLIED", lambda e: "yes" if e.get("applied") else "no"),
    ("STATUS", lambda e: e.get("status_after")),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    cells = [[_cell(extract(row)) for _, extract in columns] for row in rows]
    headers = [name for name, _ in columns]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *cells]
    ]
    return "\n".join(lines)


def key_values(item: dict[str, Any]) -> str:
    """One ``key: value`` line per set field, for a single resource in a terminal."""
    shown = {key: value for key, value in item.items() if value not in (None, [], {})}
    width = max((len(key) for key in shown), default=0)
    return "\n".join(f"{key + ':':<{width + 1}} {_cell(value)}" for key, value in shown.items())


def render(value: Any, fmt: str, columns: list[Column] | None = None) -> str:
    """``value`` in ``fmt``; tables use ``columns`` for lists (``{"items": [...]}``) of resources."""
    if fmt.startswith(jsonpath.PREFIX):
        try:
            template = jsonpath.parse(fmt.removeprefix(jsonpath.PREFIX))
        except jsonpath.JsonPathError as exc:
            raise UsageError(f"-o {fmt}: {exc}") from None
        # The answer is printed whatever the template finds: the call was made, and a script
        # must not take it for one that was not (nor retry a create). A path that found
        # nothing at all is said on stderr.
        for expression in template.unmatched(value):
            sys.stderr.write(f"platformctl: warning: -o {fmt}: {expression} found nothing in the answer\n")
        return template.render(value)
    if fmt == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False).rstrip(
            "\n"
        )
    if isinstance(value, dict) and isinstance(value.get("items"), list) and columns is not None:
        return table(value["items"], columns)
    if isinstance(value, dict):
        return key_values(value)
    return str(value)


def emit(stream: TextIO, value: Any, fmt: str, columns: list[Column] | None = None) -> None:
    stream.write(render(value, fmt, columns) + "\n")
    stream.flush()
