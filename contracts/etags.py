"""Entity tags of the API's tagged reads, computed one way by the gateway (the ``ETag`` of a
``GET``) and by policy (the ``If-Match`` of its writes, checked in the writing transaction).

A catalog document's or a team's tag is a hash of what a ``GET`` answers, so it changes
exactly when that answer does. ``If-Match`` (RFC 9110 §13.1.1) holds when it is ``*`` and the
resource exists, or when one of its entity tags is the current one compared strongly: a weak
tag (``W/"..."``) never matches.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec


def content_tag(body: Any) -> str:
    # Sorted keys: the same document gets the same tag whatever order a service sent it in.
    return f'"{hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()[:32]}"'


def if_match_holds(if_match: str, current: str | None) -> bool:
    """Whether ``If-Match: <if_match>`` holds for a resource whose tag is ``current`` (None:
    the resource does not exist)."""
    if current is None:
        return False
    tags = [tag.strip() for tag in if_match.split(",")]
    return "*" in tags or current in tags


# One entity tag (RFC 9110 §8.8.3): optionally weak, quoted, of visible characters but `"`.
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')


def if_match_value(lines: list[str]) -> str:
    """The If-Match condition of a request, its header lines taken as one comma-separated list
    (RFC 9110 §5.3): ``*`` alone, or entity tags. ValueError, naming what is wrong, otherwise."""
    members = [member.strip() for line in lines for member in line.split(",")]
    if members == ["*"]:
        return "*"
    if not members or any(not _ENTITY_TAG.fullmatch(member) for member in members):
        raise ValueError('must be * or entity tags as the ETag header gives them ("...", W/"...")')
    return ", ".join(members)
