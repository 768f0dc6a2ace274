"""Git object ids computed in Python (SHA-1 object format), without touching a repository.

A request directory's tree id is a pure function of its files, so the publisher can tell
whether the remote already holds a bundle (a redelivery after a crash between push and
database commit) by comparing ids instead of committing again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

FILE_MODE = "100644"
TREE_MODE = "40000"


def object_id(kind: str, content: bytes) -> str:
    """Hex id of a loose object: ``sha1("<kind> <len>\\0" + content)``."""
    header = f"{kind} {len(content)}\0".encode()
    return hashlib.sha1(header + content, usedforsecurity=False).hexdigest()


def blob_id(content: bytes) -> str:
    """What ``git hash-object --stdin`` prints for ``content``."""
    return object_id("blob", content)


def _sort_key(entry: tuple[str, str, str]) -> bytes:
    # Git orders tree entries by name bytes, comparing a subtree as if its name ended in "/".
    mode, name, _ = entry
    return name.encode() + (b"/" if mode == TREE_MODE else b"")


def tree_id_of_entries(entries: list[tuple[str, str, str]]) -> str:
    """Tree id of ``(mode, name, hex id)`` entries: what ``git mktree`` prints for them."""
    body = b"".join(
        f"{mode} {name}".encode() + b"\0" + bytes.fromhex(oid)
        for mode, name, oid in sorted(entries, key=_sort_key)
    )
    return object_id("tree", body)


def tree_id(files: Mapping[str, bytes]) -> str:
    """Tree id of a directory holding ``files`` (relative ``/``-separated paths, mode 100644).

    Nested paths become subtrees, as git would store them.
    """
    files_here: dict[str, bytes] = {}
    subdirectories: dict[str, dict[str, bytes]] = {}
    for path, content in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            subdirectories.setdefault(head, {})[rest] = content
        else:
            files_here[head] = content
    entries = [(FILE_MODE, name, blob_id(content)) for name, content in files_here.items()]
    entries += [(TREE_MODE, name, tree_id(inner)) for name, inner in subdirectories.items()]
    return tree_id_of_entries(entries)
