"""The one quantity grammar: Kubernetes' own examples, its published pattern, and no second copy.

The examples are those of ``k8s.io/apimachinery/pkg/api/resource`` (``quantity_test.go``,
``TestQuantityParse``): the value the API server stores for each text, including its
rounding to a nano and its cap on binary quantities. The official Python client's
``parse_quantity`` is the oracle for generated quantities; it neither rounds nor caps, so
the generator stays where those do not apply.
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity as client_parse_quantity

from contracts.kubernetes_quantities import (
    BINARY_SUFFIXES,
    DECIMAL_SUFFIXES,
    SUFFIXES,
    InvalidQuantity,
    parse_quantity,
    quantity_problem,
)

ROOT = Path(__file__).resolve().parents[2]
MAX_BINARY = Decimal(2**63 - 1)

# text -> value, from Kubernetes' TestQuantityParse.
KUBERNETES_EXAMPLES = {
    "0": "0",
    "0n": "0",
    "0Ki": "0",
    "0T": "0",
    "1": "1",
    "1Ki": "1024",
    "7Mi": str(7 * 2**20),
    "6Gi": str(6 * 2**30),
    "4Pi": str(4 * 2**50),
    "3Ei": str(3 * 2**60),
    "5n": "5e-9",
    "4u": "4e-6",
    "3m": "3e-3",
    "8k": "8e3",
    "50k": "5e4",
    "7M": "7e6",
    "6G": "6e9",
    "300T": "3e14",
    "2P": "2e15",
    "1E": "1e18",
    "12E": "12e18",
    "1E-3": "1e-3",
    "1e3": "1e3",
    "1E18": "1e18",
    "1e14": "1e14",
    "100.035k": "100035",
    "0.0005k": "0.5",
    "0.00500": "0.005",
    "0.5e-2": "0.005",
    "10.035M": "10035e3",
    "1.3E+6": "13e5",
    "1.53E12": "153e10",
    "7.123456M": "7123456",
    "6.987654321G": "6987654321",
    "1.01E": "101e16",
    # The API server keeps a nano at most, rounding away from zero ...
    "3.001n": "4e-9",
    "1.1E-9": "2e-9",
    "0.0000000001": "1e-9",
    "0.5e-9": "1e-9",
    "0.9n": "1e-9",
    "0.00000012345": "124e-9",
    "0.000000000001Ki": "2e-9",
    # ... and caps a binary quantity at 2^63-1.
    "9Ei": str(2**63 - 1),
    "9223372036854775807Ki": str(2**63 - 1),
    "100.035Ki": "10243584e-2",
    "0.5Mi": str(2**19),
    "0.025Ti": "274877906944e-1",
    ".001": "0.001",
    ".0001k": "0.1",
    "1.": "1",
    "1.G": "1e9",
}

# Kubernetes' own invalid list, then what its scanner takes for zero but the grammar refuses.
NOT_QUANTITIES = ["1.1.M", "1+1.0M", "0.1mi", "0.1am", "aoeu", ".5i", "1i", "-3.01i", "-3.01e-", " 1", "1 "]
NOT_QUANTITIES += [
    "",
    "-",
    "+",
    ".",
    "-.",
    "Gi",
    "m",
    "e3",
    "1K",
    "1e",
    "1E+",
    "1Ki3",
    "1e1.5",
    "1e2147483648",
]
NOT_QUANTITIES += ["１", "1_000", "Infinity", "NaN", "0x10", "1" * 65]

# The pattern Kubernetes publishes for quantities in CRD schemas; its exponents may have a
# fraction, which ParseQuantity then refuses.
PUBLISHED_PATTERN = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


@pytest.mark.parametrize(("text", "value"), sorted(KUBERNETES_EXAMPLES.items()))
def test_kubernetes_examples_have_the_api_servers_value(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)
    assert parse_quantity("+" + text) == Decimal(value)
    assert parse_quantity("-" + text) == -Decimal(value)


@pytest.mark.parametrize("text", NOT_QUANTITIES)
def test_what_is_not_a_quantity_is_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidQuantity) as caught:
        parse_quantity(text)
    assert str(caught.value) == f"{text[:64]!r} is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"


def test_an_amount_may_be_zero_but_not_negative() -> None:
    assert quantity_problem("0") is None
    assert quantity_problem("500m") is None
    assert quantity_problem("-0") is None
    assert quantity_problem("-1") == "'-1' is negative; a resource amount cannot be"
    assert quantity_problem("lots") == "'lots' is not a Kubernetes quantity (e.g. 500m, 2, 4Gi)"


def _exact(number: str, suffix: str) -> bool:
    """Whether the value stays at or above a nano, where neither parser rounds."""
    fraction = len(number.partition(".")[2])
    if suffix in BINARY_SUFFIXES:
        return True
    if suffix not in SUFFIXES and suffix:
        return int(suffix[1:]) - fraction >= -9
    return DECIMAL_SUFFIXES.get(suffix, 0) - fraction >= -9


numbers = st.from_regex(r"\A([0-9]{1,7}(\.[0-9]{0,3})?|\.[0-9]{1,3})\Z")
suffixes = st.sampled_from(["", *sorted(SUFFIXES)]) | st.builds(
    lambda e, sign: f"{e}{sign}", st.sampled_from(["e", "E"]), st.integers(-12, 24)
)


@settings(max_examples=400)
@given(sign=st.sampled_from(["", "+", "-"]), number=numbers, suffix=suffixes)
def test_generated_quantities_agree_with_the_official_client(sign: str, number: str, suffix: str) -> None:
    assume(_exact(number, suffix))
    text = sign + number + suffix
    expected = client_parse_quantity(text)  # type: ignore[no-untyped-call]
    assume(suffix not in BINARY_SUFFIXES or abs(expected) <= MAX_BINARY)
    assert parse_quantity(text) == expected


@settings(max_examples=400)
@given(st.text(alphabet="0123456789.+-eEinumkKMGTP", max_size=8))
def test_accepted_exactly_where_the_published_pattern_and_integer_exponents_allow(text: str) -> None:
    published = PUBLISHED_PATTERN.match(text)
    exponent = published is not None and published.group(8) is not None
    expected = published is not None and not (exponent and "." in published.group(8))
    try:
        parse_quantity(text)
    except InvalidQuantity:
        assert not expected, text
    else:
        assert expected, text


# -- one grammar --------------------------------------------------------------------------------------

GRAMMAR_OWNER = ROOT / "contracts" / "kubernetes_quantities.py"
FOREIGN_PARSERS = ("kubernetes.utils.quantity", "kubernetes.utils")
_SUFFIX_RUN = re.compile(r"KMGTPE|\[[numkKMGTPE]{4,}\]|(Ki|Mi|Gi|Ti|Pi|Ei)\W{0,3}(Ki|Mi|Gi|Ti|Pi|Ei)")


def _grammar_copies(path: Path) -> list[str]:
    """Unit tables, suffix regexes and imports of another quantity parser in ``path``."""
    found = []
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.module in FOREIGN_PARSERS:
            found.append(f"{where} imports {node.module}")
        elif isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name in FOREIGN_PARSERS]
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and _SUFFIX_RUN.search(node.value)
        ):
            found.append(f"{where} spells quantity suffixes: {node.value[:40]!r}")
        elif isinstance(node, ast.Set | ast.List | ast.Tuple | ast.Dict):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            strings = {
                item.value for item in items if isinstance(item, ast.Constant) and item.value in SUFFIXES
            }
            if len(strings & BINARY_SUFFIXES.keys()) >= 2:
                found.append(f"{where} lists quantity suffixes: {sorted(strings)}")
    return found


def test_the_grammar_detector_finds_a_planted_copy(tmp_path: Path) -> None:
    planted = tmp_path / "units.py"
    planted.write_text(
        'import re\nfrom kubernetes.utils.quantity import parse_quantity\nUNITS = {"", "m", "Ki", "Mi"}\n'
        'SUFFIX = re.compile(r"[0-9]+(Ki|Mi|Gi)?")\nLIMIT = "512Mi"\n',
        encoding="utf-8",
    )
    assert [problem.split(" ", 1)[1] for problem in _grammar_copies(planted)] == [
        "imports kubernetes.utils.quantity",
        "lists quantity suffixes: ['Ki', 'Mi', 'm']",
        "spells quantity suffixes: '[0-9]+(Ki|Mi|Gi)?'",
    ]


def test_there_is_one_quantity_grammar() -> None:
    found = []
    for folder in ("libs", "services", "contracts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path != GRAMMAR_OWNER and "__pycache__" not in path.parts:
                found += _grammar_copies(path)
    assert found == [], "parse, check and compare quantities with contracts.kubernetes_quantities"
