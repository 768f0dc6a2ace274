"""Kubernetes resource quantities (``500m``, ``2``, ``4Gi``, ``1e3``) and resource names.

This is the platform's only grammar of quantities: everything that checks, compares or
builds one goes through here (``tests/unit/test_kubernetes_quantities.py`` fails when a
second grammar appears). It is the API server's (``k8s.io/apimachinery/pkg/api/resource``)::

    <quantity> ::= [+|-] <number> [<suffix>]
    <number>   ::= <digits> | <digits>. | <digits>.<digits> | .<digits>
    <suffix>   ::= Ki | Mi | Gi | Ti | Pi | Ei            powers of 1024
                 | n | u | m | k | M | G | T | P | E      powers of 1000
                 | (e|E) [+|-] <digits>                   powers of ten

:func:`parse_quantity` gives the value the API server stores, which is what two
quantities must be compared by: a non-zero value finer than a nano rounds away from zero
(``0.1n`` is ``1n``) and a binary quantity caps at 2^63-1 (``8Ei``). The API server's
scanner also reads strings without a digit (``-``, ``.``, ``Gi``) as zero; those are
refused here, as the documented grammar refuses them, because whoever wrote one meant
something else.

Kubernetes parses ``-1``, but no quota, limit or request may be negative:
:func:`quantity_problem` is the check for an amount someone wrote.
"""

from __future__ import annotations

import decimal
import re
from decimal import ROUND_UP, Decimal

from contracts.kubernetes_names import label_key_problem

MAX_QUANTITY_LENGTH = 64
BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}  # powers of two
DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
SUFFIXES = frozenset(BINARY_SUFFIXES) | frozenset(DECIMAL_SUFFIXES)

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    # The exponent comes first so "1E3" is a thousand, not "1E" (exa) followed by "3".
    r"(?:[eE](?P<exponent>[+-]?[0-9]+)|(?P<suffix>"
    + "|".join(sorted(SUFFIXES, key=len, reverse=True))
    + "))?"
)
# The API server keeps an exponent in 32 bits (wrapping larger ones round); refuse those.
_MAX_EXPONENT = 2**31 - 1
_MAX_BINARY = Decimal(2**63 - 1)
_NANO = Decimal("1e-9")
# Enough digits that only the rounding to a nano ever rounds: a quantity has at most
# MAX_QUANTITY_LENGTH digits and a suffix multiplies it by at most 2^60.
_EXACT = decimal.Context(prec=2 * MAX_QUANTITY_LENGTH, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


class InvalidQuantity(ValueError):
    """The text is not a Kubernetes quantity; ``str()`` says so, naming the text."""

    def __init__(self, text: str) -> None:
        super().__init__(f"{_echo(text)} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)")


def _echo(text: str) -> str:
    return repr(text[:MAX_QUANTITY_LENGTH])


def _stored(value: Decimal) -> Decimal:
    """``value`` at the API server's finest resolution, a nano, rounded away from zero."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -9:
        return value.quantize(_NANO, rounding=ROUND_UP, context=_EXACT)
    return value


def parse_quantity(text: str) -> Decimal:
    """The value the API server stores for quantity ``text``, or :class:`InvalidQuantity`.

    Signs are allowed as in Kubernetes; use :func:`quantity_problem` to check an amount.
    """
    match = _QUANTITY.fullmatch(text) if len(text) <= MAX_QUANTITY_LENGTH else None
    if match is None:
        raise InvalidQuantity(text)
    number = Decimal(match["number"])
    if match["exponent"] is not None:
        exponent = int(match["exponent"])
        if abs(exponent) > _MAX_EXPONENT:
            raise InvalidQuantity(text)
        return _stored(number.scaleb(exponent, _EXACT))
    suffix = match["suffix"]
    if suffix in BINARY_SUFFIXES:
        value = _stored(_EXACT.multiply(number, Decimal(1 << BINARY_SUFFIXES[suffix])))
        return value if abs(value) <= _MAX_BINARY else _MAX_BINARY.copy_sign(value)
    return _stored(number.scaleb(DECIMAL_SUFFIXES.get(suffix, 0), _EXACT))


def quantity_problem(text: str) -> str | None:
    """Why ``text`` cannot be an amount of a resource (a quota, limit or request), or None."""
    try:
        value = parse_quantity(text)
    except InvalidQuantity as exc:
        return str(exc)
    if value < 0:
        return f"{_echo(text)} is negative; a resource amount cannot be"
    return None


def resource_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a resource name (``requests.cpu``, ``count/deployments.apps``), or None."""
    if label_key_problem(name) is not None:
        return f"{_echo(name)} is not a resource name"
    return None
