"""git-publisher changes and direct-mode publishers over real bare remotes, for its tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from services.git_publisher.adapters.git_repository import GitRepository, Identity
from services.git_publisher.domain.changes import (
    Approval,
    RemoveDirectory,
    WriteDirectory,
    remove_directory,
    write_directory,
)
from services.git_publisher.service_layer.publisher import DirectPublisher, Published
from tests.support.git_remotes import BareRemote, search_path
from tests.support.rendered_bundles import CORE_FILES

if TYPE_CHECKING:
    from services.git_publisher.service_layer.publisher import ChangeOutcome

IDENTITY = Identity("platform-control-plane", "platform@example.com")


def request_id(n: int) -> str:
    return f"req-{n:016x}"


def directory(n: int) -> str:
    return f"clusters/us-east-1/teams/payments/app{n}/{request_id(n)}"


def marker(n: int) -> str:
    """Where the generation marker of ``request_id(n)`` lives (its id starts with ``00``)."""
    return f".platform/generations/00/{request_id(n)}"


def bundle(
    n: int, generation: int = 1, *, variant: str = "", approvals: list[Approval] | None = None
) -> WriteDirectory:
    files = [(name, f"# {name} of {request_id(n)}{variant}\nkind: Thing\n") for name in CORE_FILES]
    return write_directory(
        request_id=request_id(n),
        generation=generation,
        team="payments",
        app=f"app{n}",
        gitops_path=directory(n) + "/",
        files=files,
        approvals=approvals or [],
    )


def teardown(n: int, generation: int = 2, *, gitops_path: str | None = None) -> RemoveDirectory:
    """The teardown of ``request_id(n)``; ``gitops_path=""`` for a request never rendered."""
    return remove_directory(
        request_id=request_id(n),
        generation=generation,
        team="payments",
        app=f"app{n}",
        gitops_path=directory(n) if gitops_path is None else gitops_path,
    )


def make_publisher(
    local: Path,
    remote: BareRemote | None,
    *,
    push: bool = True,
    repository_class: type[GitRepository] = GitRepository,
) -> DirectPublisher:
    """A publisher with its own bare repository at ``local`` (one replica), pushing to ``remote``."""
    repository = repository_class(
        local,
        branch="main",
        identity=IDENTITY,
        remote_url=remote.url if remote else None,
        push_enabled=push and remote is not None,
        timeout_seconds=30,
        search_path=search_path(),
    )
    return DirectPublisher(repository, push_attempts=5, retry_backoff_seconds=0.01)


def applied(results: Sequence[ChangeOutcome]) -> list[Published]:
    """``results``, each checked to be an applied change (none superseded by the branch)."""
    assert all(isinstance(result, Published) for result in results), results
    return [result for result in results if isinstance(result, Published)]
