"""Alert expressions evaluated over scraped samples, for tests that make an alert's condition real.

Only the shape our alerts use for conditions a test can create:
``<agg> by (<labels>) (<selector>) <op> <number>``, over one scrape (no ranges, no ``for``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import promql_parser
from prometheus_client import CollectorRegistry

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


def registry_samples(registry: CollectorRegistry, process: str = "test") -> list[Sample]:
    """Every sample ``registry`` would serve on ``/metrics`` now."""
    return [
        Sample(process, sample.name, dict(sample.labels), sample.value)
        for family in registry.collect()
        for sample in family.samples
    ]


def evaluate(expr: str, samples: list[Sample]) -> dict[tuple[str, ...], float]:
    """An alert expression of the shape ``<agg> by (<labels>) (<selector>) <op> <number>``
    over one scrape: the series that would fire, by their grouping labels."""
    node = promql_parser.parse(expr)
    assert isinstance(node, promql_parser.BinaryExpr), expr
    assert isinstance(node.lhs, promql_parser.AggregateExpr), expr
    assert isinstance(node.rhs, promql_parser.NumberLiteral), expr
    selector = node.lhs.expr
    assert isinstance(selector, promql_parser.VectorSelector), expr
    modifier = node.lhs.modifier
    assert modifier is not None, f"{expr}: aggregate by named labels"
    by = list(modifier.labels)
    groups: dict[tuple[str, ...], list[float]] = {}
    for sample in samples:
        if sample.name == selector.name and all(
            _matches(m, sample.labels) for m in selector.matchers.matchers
        ):
            groups.setdefault(tuple(sample.labels.get(label, "") for label in by), []).append(sample.value)
    aggregate, compare = AGGREGATIONS[str(node.lhs.op)], COMPARISONS[str(node.op)]
    return {
        key: value
        for key, value in ((key, aggregate(values)) for key, values in groups.items())
        if compare(value, node.rhs.val)
    }


def _matches(matcher: Any, labels: dict[str, str]) -> bool:
    value = labels.get(matcher.name, "")
    outcomes: dict[str, bool] = {
        "MatchOp.Equal": value == matcher.value,
        "MatchOp.NotEqual": value != matcher.value,
        "MatchOp.Re": re.fullmatch(matcher.value, value) is not None,
        "MatchOp.NotRe": re.fullmatch(matcher.value, value) is None,
    }
    return outcomes[str(matcher.op)]
