"""What the timeline keeps of an event, and how much of it one reply may carry.

The timeline is the audit trail, not a copy of the bundles: a ``request.rendered`` or
``request.published`` event carries every manifest of the environment (about 6 KB), and a
request reconciled 500 times would otherwise keep 500 copies of them and answer a reply no
bus can carry. The manifests live in the GitOps repository at the commit the timeline
names; the timeline keeps each file's name, size and SHA-256 (with the bundle's digest,
which the event carries already). Any other text longer than :data:`MAX_TEXT_CHARS` is cut,
and an entry whose data still exceeds :data:`MAX_DATA_BYTES` keeps its identifying fields
only, so no single entry can outgrow a page.

:func:`stored_form` is applied when an entry is written and again when it is read, so rows
written before it (whole bundles) are answered in the same form; it is idempotent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec

# Longer text (an error, a drift value) is cut to this many characters, a note included.
MAX_TEXT_CHARS = 4096
# An entry's data larger than this, once files are summarised and text cut, keeps only the
# fields that identify it (and says it was cut).
MAX_DATA_BYTES = 32 * 1024
# Fields kept when an entry's data is cut to its identity.
IDENTITY_FIELDS = (
    "request_id",
    "generation",
    "gitops_path",
    "namespace",
    "digest",
    "commit_sha",
    "branch",
    "stage",
    "status",
)


def stored_form(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (an event's data as JSON values) as the timeline keeps it: files as a list of
    ``{name, size_bytes, sha256}``, long text cut, and at most :data:`MAX_DATA_BYTES`."""
    slim = {key: _files(value) if key == "files" else _cut(value) for key, value in data.items()}
    size = len(msgspec.json.encode(slim))
    if size <= MAX_DATA_BYTES:
        return slim
    kept = {key: slim[key] for key in IDENTITY_FIELDS if key in slim}
    return {**kept, "truncated": True, "original_size_bytes": size}


def _files(value: Any) -> Any:
    """A bundle's files as names, sizes and hashes (the content is in the GitOps repository)."""
    if not isinstance(value, list):
        return _cut(value)
    return [_file_summary(item) for item in value]


def _file_summary(item: Any) -> Any:
    if not (isinstance(item, dict) and isinstance(item.get("content"), str)):
        return _cut(item)  # already a summary (or not a file): kept as it is
    content = item["content"].encode()
    return {
        "name": item.get("name"),
        "size_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def _cut(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_TEXT_CHARS:
            return value
        # The note counts towards the limit, so text cut once is never cut again.
        note = f"... [cut: {len(value)} characters in all]"
        return value[: MAX_TEXT_CHARS - len(note)] + note
    if isinstance(value, dict):
        return {key: _cut(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_cut(item) for item in value]
    return value


def fitting(sizes: Iterable[int], budget: int) -> int:
    """How many of the leading entries of ``sizes`` (encoded bytes each) fit in ``budget``;
    at least one, so a page always moves the reader on (an entry is bounded by
    :data:`MAX_DATA_BYTES` and its few fixed fields, far below any page budget)."""
    count = used = 0
    for size in sizes:
        used += size
        if count and used > budget:
            break
        count += 1
    return count
