"""Kubernetes resource quantities (``500m``, ``2``, ``4Gi``, ``1e3``) and resource names.

The OpenAPI schemas type a quantity as "string or number" only, so ``"lots"`` would pass
them and fail at apply time in the cluster. The grammar here is the API server's
(``k8s.io/apimachinery/pkg/api/resource``), restricted to non-negative values because
quotas and limits cannot be negative.
"""

from __future__ import annotations

import re
from decimal import Decimal

from libs.kubernetes_names import label_key_problem

MAX_QUANTITY_LENGTH = 64
_QUANTITY = re.compile(
    r"(?P<number>\+?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    # The exponent form comes first so "1E3" is a thousand, not "1E" (exa) followed by "3".
    r"(?:(?P<exponent>[eE][-+]?[0-9]{1,3})|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?"
)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """The value of quantity ``text``; ValueError when it is not a non-negative quantity."""
    match = _QUANTITY.fullmatch(text) if len(text) <= MAX_QUANTITY_LENGTH else None
    if match is None:
        raise ValueError(f"{text[:MAX_QUANTITY_LENGTH]!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")
    number = Decimal(match["number"])
    if match["exponent"]:
        return number.scaleb(int(match["exponent"][1:]))
    suffix = match["suffix"]
    if suffix in _BINARY:
        return number * (1 << _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number


def resource_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a resource name (``requests.cpu``, ``count/deployments.apps``), or None."""
    if label_key_problem(name) is not None:
        return f"{name[:MAX_QUANTITY_LENGTH]!r} is not a resource name"
    return None
