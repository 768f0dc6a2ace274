"""Generation markers: the GitOps branch itself fences publisher replicas against each other.

Every request has one small file outside its environment directory,
``.platform/generations/<aa>/<request-id>``, naming the generation of the last change
the branch applied for it (a written bundle or a teardown). A change rewrites the marker in
the same commit as the directory, and is applied only if the marker at the base it is built
on is not newer than its own generation. The base is always the freshly fetched remote head
and the push is fast-forward only (a rejected push is rebuilt on a new base and checked
again), so the check and the push are atomic with respect to the remote: an older
generation can never land after a newer one, whichever replica handles which event when.

A teardown leaves its marker behind (a tombstone), also for a request that never had a
directory, so a late bundle of an older generation cannot bring the environment back.

Markers are read leniently (an editor's CRLF, trailing spaces, ``generation:7``) and fail
closed: a marker that names no generation it can be sure of raises :class:`UnreadableMarker`
instead of counting as absent, which would let any older generation through the fence.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

MARKER_ROOT = ".platform/generations"

# What intake issues: "req-" and 16 hex digits (random, or from the idempotency key's digest).
_HEX_REQUEST_ID = re.compile(r"^req-([0-9a-f]{2})[0-9a-f]*$")
# One line of a marker, surrounding whitespace (CR of a CRLF included) already stripped.
_GENERATION_LINE = re.compile(r"generation\s*:\s*([0-9]{1,18})", re.IGNORECASE)
_GENERATION_KEY = re.compile(r"generation\s*:", re.IGNORECASE)

MarkerState = Literal["published", "removed"]


def marker_path(request_id: str) -> str:
    """Where ``request_id``'s marker lives: in one of 256 shards under :data:`MARKER_ROOT`.

    Git rewrites every tree on the path of a changed file, so one flat directory of all
    markers (tombstones included: they are never removed) would make each commit write a
    tree as large as the number of requests; a shard holds 1/256 of them. One level, not
    two: a push or fetch also walks every tree object of the branch (the connectivity
    check), and a second level adds one tree object per request — at 40 000 requests about
    10 % more CPU per push, where one level made no measurable difference. ``request_id`` must already be a checked path segment
    (:func:`~services.git_publisher.domain.changes.checked_request_id`).
    """
    match = _HEX_REQUEST_ID.match(request_id)
    # Intake's ids spread evenly by their own digits (and an operator finds the file by eye);
    # any other id is spread by a hash of it.
    digits = match.group(1) if match else hashlib.sha1(request_id.encode(), usedforsecurity=False).hexdigest()
    return f"{MARKER_ROOT}/{digits[:2]}/{request_id}"


def marker_content(generation: int, state: MarkerState) -> bytes:
    """The marker's bytes: a pure function of the change, so an unchanged marker means no commit."""
    return f"generation: {generation}\nstate: {state}\n".encode()


class UnreadableMarker(ValueError):
    """A marker exists but names no generation for sure (edited by hand, truncated, garbage)."""


def marker_generation(content: bytes | None) -> int | None:
    """The generation a marker names; None only when there is no marker.

    Tolerates what a hand edit leaves (CRLF line ends, a byte order mark, surrounding
    spaces, ``generation:7``, any letter case). Raises :class:`UnreadableMarker` for a marker
    without exactly one readable ``generation`` line (or with two that disagree): treating
    it as absent would let a stale generation past the fence, so the caller refuses the
    change until an operator fixes the file.
    """
    if content is None:
        return None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnreadableMarker("not UTF-8") from None
    found: set[int] = set()
    for line in text.splitlines():
        stripped = line.strip()
        if not _GENERATION_KEY.match(stripped):
            continue  # "state: ...", blank lines and anything else a marker may carry
        match = _GENERATION_LINE.fullmatch(stripped)
        if match is None:
            raise UnreadableMarker(f"generation line unreadable: {stripped[:40]!r}")
        found.add(int(match.group(1)))
    if len(found) != 1:
        raise UnreadableMarker("no generation line" if not found else "generation lines disagree")
    return found.pop()


def supersedes(marker: int | None, generation: int) -> bool:
    """True when the branch already holds a newer generation than ``generation``.

    Equal is not newer: re-publishing the same generation is a redelivery, which either
    finds its state in place (no commit) or restores it.
    """
    return marker is not None and marker > generation
