"""Alert expressions evaluated over real scrapes, for tests that make an alert's condition real.

Covers the PromQL our alerts use, evaluated at one instant over one scrape (``after``) and,
for ``increase``/``rate``, the scrape before the condition was created (``before``): the
range of a range selector is taken to span exactly those two scrapes, so
``increase(x[15m])`` is ``after - before`` per series and ``rate`` divides that by the
range. As in Prometheus, a series needs a sample in both scrapes: one that first appears in
``after`` has no increase (so a counter created at its first increment never alerts).
``time()`` is ``now``, so an alert that needs time to pass (a gauge that stopped moving) is
evaluated at the later instant instead of waited for.
Aggregations (``sum``/``max``/``min``, with or without ``by``), arithmetic between vectors
with the same labels and scalars, and a comparison with a number at the top. ``for:`` is
not evaluated: a test shows the condition holds, not for how long.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import CollectorRegistry

ALERTS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "observability" / "alerts.yaml"

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
}
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"max": max, "min": min, "sum": sum}


@dataclass(frozen=True)
class Sample:
    process: str
    name: str
    labels: dict[str, str]
    value: float


def alert_expr(name: str) -> str:
    """The expression of the alert ``name`` as shipped in deploy/observability/alerts.yaml (a
    test naming an alert this way is one that makes it fire; the assets test checks each has one)."""
    groups = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    [expr] = [rule["expr"] for group in groups for rule in group["rules"] if rule["alert"] == name]
    return str(expr)


def registry_samples(registry: CollectorRegistry, process: str = "test") -> list[Sample]:
    """Every sample ``registry`` would serve on ``/metrics`` now."""
    return [
        Sample(process, sample.name, dict(sample.labels), sample.value)
        for family in registry.collect()
        for sample in family.samples
    ]


LabelSet = tuple[tuple[str, str], ...]
Vector = dict[LabelSet, float]
ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": lambda a, b: a / b if b else float("nan"),
}


@dataclass(frozen=True)
class _Scrapes:
    after: list[Sample]
    before: list[Sample]
    now: float


def evaluate(
    expr: str, samples: list[Sample], *, before: list[Sample] | None = None, now: float | None = None
) -> dict[tuple[str, ...], float]:
    """The series an alert expression ``<expression> <op> <number>`` would fire for, keyed by
    the values of their labels (the ``by`` labels of the outer aggregation, in order)."""
    node = promql_parser.parse(expr)
    assert isinstance(node, promql_parser.BinaryExpr), expr
    assert str(node.op) in COMPARISONS, f"{expr}: an alert compares with a number"
    assert isinstance(node.rhs, promql_parser.NumberLiteral), expr
    scrapes = _Scrapes(samples, before or [], time.time() if now is None else now)
    value = _value(node.lhs, scrapes)
    assert isinstance(value, dict), f"{expr}: an alert's condition is a vector"
    compare = COMPARISONS[str(node.op)]
    return {
        tuple(label_value for _, label_value in labels): result
        for labels, result in value.items()
        if compare(result, node.rhs.val)
    }


def _value(node: Any, scrapes: _Scrapes) -> Vector | float:
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.ParenExpr):
        return _value(node.expr, scrapes)
    if isinstance(node, promql_parser.VectorSelector):
        return _selected(node, scrapes.after)
    if isinstance(node, promql_parser.Call):
        return _call(node, scrapes)
    if isinstance(node, promql_parser.AggregateExpr):
        return _aggregate(node, scrapes)
    if isinstance(node, promql_parser.BinaryExpr):
        return _arithmetic(str(node.op), _value(node.lhs, scrapes), _value(node.rhs, scrapes))
    raise AssertionError(f"not supported by the test evaluator: {type(node).__name__}")


def _selected(selector: Any, samples: list[Sample]) -> Vector:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in samples
        if sample.name == selector.name
        and all(_matches(matcher, sample.labels) for matcher in selector.matchers.matchers)
    }


def _call(call: Any, scrapes: _Scrapes) -> Vector | float:
    name = call.func.name
    if name == "time":
        return scrapes.now
    assert name in ("increase", "rate"), f"not supported by the test evaluator: {name}()"
    [matrix] = call.args
    assert isinstance(matrix, promql_parser.MatrixSelector), name
    after = _selected(matrix.vector_selector, scrapes.after)
    before = _selected(matrix.vector_selector, scrapes.before)
    seconds = matrix.range.total_seconds() if name == "rate" else 1.0
    return {labels: (value - before[labels]) / seconds for labels, value in after.items() if labels in before}


def _aggregate(node: Any, scrapes: _Scrapes) -> Vector:
    inner = _value(node.expr, scrapes)
    assert isinstance(inner, dict), "aggregating a vector"
    by = list(node.modifier.labels) if node.modifier is not None else []
    groups: dict[LabelSet, list[float]] = {}
    for labels, value in inner.items():
        named = dict(labels)
        groups.setdefault(tuple((label, named.get(label, "")) for label in by), []).append(value)
    aggregate = AGGREGATIONS[str(node.op)]
    return {labels: aggregate(values) for labels, values in groups.items()}


def _arithmetic(op: str, lhs: Vector | float, rhs: Vector | float) -> Vector | float:
    apply = ARITHMETIC[op]
    if isinstance(lhs, dict) and isinstance(rhs, dict):
        return {labels: apply(value, rhs[labels]) for labels, value in lhs.items() if labels in rhs}
    if isinstance(lhs, dict):
        assert isinstance(rhs, float)
        return {labels: apply(value, rhs) for labels, value in lhs.items()}
    if isinstance(rhs, dict):
        return {labels: apply(lhs, value) for labels, value in rhs.items()}
    return apply(lhs, rhs)


def _matches(matcher: Any, labels: dict[str, str]) -> bool:
    value = labels.get(matcher.name, "")
    outcomes: dict[str, bool] = {
        "MatchOp.Equal": value == matcher.value,
        "MatchOp.NotEqual": value != matcher.value,
        "MatchOp.Re": re.fullmatch(matcher.value, value) is not None,
        "MatchOp.NotRe": re.fullmatch(matcher.value, value) is None,
    }
    return outcomes[str(matcher.op)]
