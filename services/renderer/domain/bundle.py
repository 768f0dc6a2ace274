"""A rendered bundle: the files of one request generation, their digest, and the read-back check."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from libs.errors import ValidationFailed

# libyaml's parser with PyYAML's safe constructor (no tags that build Python objects): the
# same documents as yaml.safe_load_all, about ten times faster; pure Python where absent.
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class BundleInvalid(ValidationFailed):
    """The request or its plan cannot become a valid bundle; retrying cannot help.

    The message names what is wrong and is safe to publish (no credentials, bounded echo of
    offending values).
    """


# Problems listed in one error: enough to act on, short enough for an event and last_error.
MAX_PROBLEMS_REPORTED = 10


def invalid_bundle(summary: str, problems: list[str]) -> BundleInvalid:
    """``summary: problem; problem; ...``, cut after :data:`MAX_PROBLEMS_REPORTED`."""
    shown = "; ".join(problems[:MAX_PROBLEMS_REPORTED])
    more = len(problems) - MAX_PROBLEMS_REPORTED
    return BundleInvalid(f"{summary}: {shown}" + (f" (and {more} more)" if more > 0 else ""))


@dataclass(frozen=True)
class BundleFile:
    name: str
    content: str


@dataclass(frozen=True)
class Bundle:
    """The files of ``request_id`` at ``generation``, relative to ``gitops_path``."""

    request_id: str
    generation: int
    namespace: str
    gitops_path: str
    files: tuple[BundleFile, ...]

    @property
    def digest(self) -> str:
        return bundle_digest(self.files)


def bundle_digest(files: tuple[BundleFile, ...] | list[BundleFile]) -> str:
    """Hex SHA-256 of the JSON array of ``[name, content]`` pairs sorted by name.

    JSON makes the encoding unambiguous (no separator a file could contain) and easy to
    recompute anywhere; sorting makes the digest independent of file order.
    """
    pairs = sorted([file.name, file.content] for file in files)
    encoded = json.dumps(pairs, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def same_structure(left: Any, right: Any) -> bool:
    """Equality that also compares types, so ``True`` is not ``1`` and ``"1"`` is not ``1``."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_structure(left[key], right[key]) for key in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(same_structure(a, b) for a, b in zip(left, right, strict=True))
    return bool(left == right)


def check_rendered(file_name: str, text: str, expected: dict[str, Any]) -> None:
    """Raise :class:`BundleInvalid` unless ``text`` is one YAML document equal to ``expected``.

    The structural comparison is what guarantees that no value added a key, a document or
    an object: whatever the template and the serializer produced must read back as
    exactly the object the domain intended.
    """
    try:
        documents = list(yaml.load_all(text, Loader=_SAFE_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise BundleInvalid(f"{file_name}: rendered YAML does not parse{where}") from None
    if len(documents) != 1:
        raise BundleInvalid(f"{file_name}: rendered {len(documents)} YAML documents, expected exactly one")
    if not same_structure(documents[0], expected):
        raise BundleInvalid(f"{file_name}: rendered YAML differs from the intended object")
