"""Conditional reads: each resource ``GET`` answers with a strong ``ETag``, and ``304 Not
Modified`` (no body, the ``ETag`` again) when the caller's ``If-None-Match`` names it.

An environment request's tag is its ``version`` (``"7"``), the value ``If-Match`` takes on
its writes (:mod:`.request_inputs`). A catalog document's or a team's tag is a hash of the
representation (:mod:`contracts.etags`): it changes exactly when what a ``GET`` returns
changes (a team's spend included), and policy checks a PUT's ``If-Match`` against it in the
transaction that writes.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Response
from litestar.params import HeaderParameter

from contracts.etags import content_tag

__all__ = ["CatalogIfMatch", "IfNoneMatch", "content_tag", "tagged", "version_tag"]

IfNoneMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-None-Match",
        description="ETags of representations the caller holds (or `*`): `304`, no body, when one is current",
        max_length=1024,
    ),
]


CatalogIfMatch = Annotated[
    str | None,
    HeaderParameter(
        name="If-Match",
        description="Replace only if the current `ETag` is one of these (or, `*`, if it exists at all); "
        "else 409 and nothing changes",
        max_length=1024,
    ),
]


def version_tag(version: int) -> str:
    return f'"{version}"'


def tagged(body: Any, etag: str, if_none_match: str | None) -> Response[Any]:
    """``body`` with its ``etag``, or ``304`` when ``If-None-Match`` names it."""
    if if_none_match is not None and _names(if_none_match, etag):
        return Response(content=None, status_code=304, headers={"ETag": etag})
    return Response(body, status_code=200, headers={"ETag": etag})


def _names(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison: ``W/"x"`` names ``"x"``; ``*`` names any current representation."""
    held = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in held or etag in held
