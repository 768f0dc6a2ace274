"""What the publisher does to the GitOps tree: write or remove one request's directory.

Pure values and rules. A change is one commit (one per request); its desired state of the
directory and of the request's generation marker (:mod:`.generation_markers`) is fully
determined by the change itself, which is what makes a publish idempotent: if the base
already holds that state, there is nothing to commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from services.git_publisher.domain import generation_markers
from services.git_publisher.domain.git_objects import tree_id

# Path segments the publisher writes: what the renderer derives from DNS-1123 names,
# regions and request ids. Anything else (``..``, absolute paths, quoting-worthy bytes,
# newlines that would corrupt a fast-import stream) is refused outright.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_TRAILER_VALUE = re.compile(r"^[^\x00-\x1f\x7f]{1,512}$")


class RefusedChange(Exception):
    """A change the publisher will never make, however often it is retried."""


def checked_gitops_path(path: str, request_id: str) -> str:
    """``path`` normalised (no trailing ``/``) if it is a safe directory for ``request_id``.

    The directory must be relative, made of plain segments, at least two deep (never the
    repository root or a top-level folder), and end in the request id, so one request can
    never overwrite or delete another request's files.
    """
    normalised = path.strip().removesuffix("/")
    segments = normalised.split("/")
    if len(segments) < 2 or not all(_SEGMENT.match(s) and s not in {".", ".."} for s in segments):
        raise RefusedChange("gitops path invalid")
    if segments[-1] != request_id:
        raise RefusedChange("gitops path does not end in the request id")
    return normalised


def checked_request_id(request_id: str) -> str:
    """``request_id`` if it can name a file in the tree (its generation marker)."""
    if not _SEGMENT.match(request_id):
        raise RefusedChange("request id invalid")
    return request_id


def checked_file_name(name: str) -> str:
    segments = name.split("/")
    if not all(_SEGMENT.match(s) and s not in {".", ".."} for s in segments):
        raise RefusedChange("bundle file name invalid")
    return name


def trailer_value(value: str) -> str:
    """A value that fits on one trailer line (no newline could inject another trailer)."""
    if not _TRAILER_VALUE.match(value):
        raise RefusedChange("commit trailer value invalid")
    return value


@dataclass(frozen=True)
class Approval:
    approver: str
    signature: str


@dataclass(frozen=True)
class WriteDirectory:
    """Make ``path`` hold exactly ``files`` (stale files of an older bundle disappear)."""

    request_id: str
    generation: int
    team: str
    app: str
    path: str
    files: tuple[tuple[str, bytes], ...]
    approvals: tuple[Approval, ...] = ()

    @property
    def message(self) -> str:
        trailers = [("Platform-Request", self.request_id), ("Platform-Generation", str(self.generation))]
        for approval in self.approvals:
            trailers += [("Approved-by", approval.approver), ("Approval-Attestation", approval.signature)]
        return commit_message(f"reconcile {self.request_id} for {self.team}/{self.app}", trailers)

    @cached_property
    def desired_tree(self) -> str | None:
        return tree_id(dict(self.files))

    @property
    def marker_path(self) -> str:
        return generation_markers.marker_path(self.request_id)

    @property
    def marker(self) -> bytes:
        return generation_markers.marker_content(self.generation, "published")


@dataclass(frozen=True)
class RemoveDirectory:
    """Make ``path`` absent and leave a tombstone marker.

    ``path`` is None for a request that was never rendered: there is no directory, but the
    tombstone still keeps a late bundle of an older generation off the branch.
    """

    request_id: str
    generation: int
    team: str
    app: str
    path: str | None
    files: tuple[tuple[str, bytes], ...] = field(default=(), init=False)

    @property
    def message(self) -> str:
        trailers = [("Platform-Request", self.request_id), ("Platform-Generation", str(self.generation))]
        return commit_message(f"teardown {self.request_id} for {self.team}/{self.app}", trailers)

    @property
    def desired_tree(self) -> str | None:
        return None

    @property
    def marker_path(self) -> str:
        return generation_markers.marker_path(self.request_id)

    @property
    def marker(self) -> bytes:
        return generation_markers.marker_content(self.generation, "removed")


Change = WriteDirectory | RemoveDirectory


def commit_message(subject: str, trailers: list[tuple[str, str]]) -> str:
    """Subject, blank line, ``Key: value`` trailers (what ``git interpret-trailers`` parses)."""
    lines = [f"{key}: {trailer_value(value)}" for key, value in trailers]
    return f"{subject}\n\n" + "\n".join(lines) + "\n"


def write_directory(
    *,
    request_id: str,
    generation: int,
    team: str,
    app: str,
    gitops_path: str,
    files: list[tuple[str, str]],
    approvals: list[Approval],
) -> WriteDirectory:
    """Build (and check) the change that publishes one rendered bundle."""
    if not files:
        raise RefusedChange("bundle has no files")
    names = [checked_file_name(name) for name, _ in files]
    if len(set(names)) != len(names):
        raise RefusedChange("bundle file names repeat")
    for approval in approvals:
        trailer_value(approval.approver)
        trailer_value(approval.signature)
    return WriteDirectory(
        request_id=checked_request_id(trailer_value(request_id)),
        generation=generation,
        team=trailer_value(team),
        app=trailer_value(app),
        path=checked_gitops_path(gitops_path, request_id),
        files=tuple((name, content.encode()) for name, content in files),
        approvals=tuple(approvals),
    )


def remove_directory(
    *, request_id: str, generation: int, team: str, app: str, gitops_path: str
) -> RemoveDirectory:
    """Build (and check) the change that removes one request's directory.

    An empty ``gitops_path`` (never rendered) makes a change that only writes the tombstone.
    """
    return RemoveDirectory(
        request_id=checked_request_id(trailer_value(request_id)),
        generation=generation,
        team=trailer_value(team),
        app=trailer_value(app),
        path=checked_gitops_path(gitops_path, request_id) if gitops_path.strip() else None,
    )
