"""Desired vs live: which fields of an applied object differ in a way that matters (pure).

Rules, chosen to match what server-side apply owns and what the apiserver does to objects:

- Only fields the bundle sets are compared. Anything else in the live object (status,
  managedFields, defaults the apiserver filled in, labels another controller added) is not
  drift: we do not own it, and flagging it would report drift on every healthy object.
- In ``metadata`` only ``labels`` and ``annotations`` are compared; name and namespace are
  the identity the object was looked up by, the rest belongs to the apiserver.
- A changed or removed label or annotation that the bundle sets *is* drift.
- Resource quantities compare by the value the apiserver stores (``1`` == ``1000m``,
  ``1Gi`` == ``1024Mi``) because it re-serialises them in canonical form.
- An empty map or list in the bundle equals an absent field: the apiserver drops empty
  ``omitempty`` fields when it stores an object.
- Lists are compared position by position; a length change is one difference on the list.
- Label selectors are the exception to "extra fields are not drift": a term added to the
  ``podSelector: {}`` of a default-deny policy silently narrows it to some pods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from contracts.events import DriftItem
from contracts.kubernetes_quantities import InvalidQuantity, parse_quantity
from services.cluster_bootstrapper.domain.manifests import DesiredObject

DriftStatus = Literal["in_sync", "drift_corrected", "drifted"]

# Keys whose values are maps of resource name -> quantity (ResourceQuota, LimitRange,
# container resources, PVC requests).
QUANTITY_MAPS = frozenset(
    {
        "hard",
        "default",
        "defaultRequest",
        "max",
        "min",
        "maxLimitRequestRatio",
        "requests",
        "limits",
        "capacity",
    }
)
_SELECTORS = frozenset({"podSelector", "namespaceSelector", "selector", "matchLabels"})
_COMPARED_METADATA = ("labels", "annotations")
_NOT_COMPARED_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "status"})
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_EMPTY: tuple[Any, ...] = (None, {}, [])

MISSING_OBJECT_FIELD = "object"


def _join(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    # Label keys like ``platform.example.com/team`` would be ambiguous after a dot.
    return f'{path}["{key}"]'


def _quantity(value: Any) -> Decimal | None:
    # JSON and YAML may carry a quantity as a number (``pods: 10``); the apiserver reads
    # the number's text. ``True`` is not a quantity although Python counts it as an int.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        return parse_quantity(str(value))
    except InvalidQuantity:
        return None


class _Comparison:
    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.items: list[DriftItem] = []

    def differ(self, path: str, expected: Any, actual: Any) -> None:
        self.items.append(
            DriftItem(kind=self.kind, name=self.name, field=path, expected=expected, actual=actual)
        )

    def same_scalar(self, expected: Any, actual: Any, quantity: bool) -> bool:
        # bool is an int in Python; ``True`` must not equal ``1`` in a manifest.
        if isinstance(expected, bool) != isinstance(actual, bool):
            return False
        if expected == actual and type(expected) is type(actual):
            return True
        if quantity:
            value = _quantity(expected)
            return value is not None and value == _quantity(actual)
        return False

    def walk(self, expected: Any, actual: Any, path: str, key: str, container: str = "") -> None:
        """Compare ``expected`` (found under ``key`` in the map named ``container``) with ``actual``."""
        if expected in _EMPTY and actual in _EMPTY:
            return
        if isinstance(expected, Mapping):
            if actual is None:
                actual = {}
            if not isinstance(actual, Mapping):
                self.differ(path, expected, actual)
                return
            for child, value in expected.items():
                self.walk(value, actual.get(child), _join(path, str(child)), str(child), key)
            if key in _SELECTORS:
                for child, value in actual.items():
                    if child not in expected and value not in _EMPTY:
                        self.differ(_join(path, str(child)), None, value)
        elif isinstance(expected, list):
            if not isinstance(actual, list) or len(actual) != len(expected):
                self.differ(path, expected, actual)
                return
            for index, (want, have) in enumerate(zip(expected, actual, strict=True)):
                self.walk(want, have, f"{path}[{index}]", key, container)
        elif not self.same_scalar(expected, actual, container in QUANTITY_MAPS):
            self.differ(path, expected, actual)


def compare(desired: DesiredObject, live: Mapping[str, Any] | None) -> list[DriftItem]:
    """Differences between ``desired`` and the ``live`` object (None: it does not exist)."""
    ref = desired.ref
    comparison = _Comparison(ref.kind, ref.name)
    if live is None:
        comparison.differ(MISSING_OBJECT_FIELD, "present", "missing")
        return comparison.items
    metadata = desired.manifest.get("metadata") or {}
    live_metadata = live.get("metadata") or {}
    for key in _COMPARED_METADATA:
        if key in metadata:
            comparison.walk(metadata[key], live_metadata.get(key), f"metadata.{key}", key, "metadata")
    for key, value in desired.manifest.items():
        if key not in _NOT_COMPARED_TOP_LEVEL:
            comparison.walk(value, live.get(key), key, key)
    return comparison.items


def drift_status(items: list[DriftItem]) -> DriftStatus:
    return "in_sync" if not items else "drifted"


def drift_event_due(
    previous_status: str | None,
    previous_summary: list[DriftItem],
    status: DriftStatus,
    summary: list[DriftItem],
) -> bool:
    """Whether a scan's result is news worth ``request.drift_detected``.

    Every correction is reported (it changed the cluster). Drift that could not be corrected
    is reported when it first appears or changes, not on every scan, so a stuck environment
    does not flood the stream. Returning to in-sync is reported only after reported drift;
    ``drift_corrected`` already told everyone the environment is back in line.
    """
    if status == "drift_corrected":
        return True
    if status == "drifted":
        return previous_status != "drifted" or previous_summary != summary
    return previous_status == "drifted"
