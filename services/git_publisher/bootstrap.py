"""Composition root of the git-publisher service."""

from __future__ import annotations

from libs.service_kit import ServiceKit
from libs.settings import reveal
from services.git_publisher.adapters.git_repository import GitRepository, Identity
from services.git_publisher.entrypoints.bus import register
from services.git_publisher.service_layer.batching import CommitBatcher
from services.git_publisher.service_layer.handlers import GitPublisherService
from services.git_publisher.service_layer.publisher import DirectPublisher
from services.git_publisher.settings import GitPublisherSettings

SCHEMA = "git_publisher"


def build_repository(settings: GitPublisherSettings) -> GitRepository:
    return GitRepository(
        settings.gitops_repo_path,
        branch=settings.git_branch,
        identity=Identity(settings.git_author_name, settings.git_author_email),
        remote_url=reveal(settings.gitops_repo_url),
        push_enabled=settings.git_push_enabled,
        token=reveal(settings.git_token),
        timeout_seconds=settings.git_timeout_seconds,
        search_path=settings.git_search_path,
        home=settings.git_home,
    )


async def bootstrap(settings: GitPublisherSettings) -> ServiceKit:
    # The repository first: a path that cannot be created is a start-up error, and nothing
    # is connected yet that would need closing.
    repository = build_repository(settings)
    await repository.prepare()
    # Direct mode is the only mode so far; a pull-request mode would build a different
    # ChangeSubmitter here from a mode setting.
    publisher = DirectPublisher(repository, push_attempts=settings.git_push_attempts)
    await publisher.warm_up()
    batcher = CommitBatcher(publisher, window_seconds=settings.git_batch_window_seconds)
    kit = await ServiceKit.open(
        service="git_publisher", schema=SCHEMA, settings=settings, package="services.git_publisher"
    )
    service = GitPublisherService(
        pool=kit.pool,
        submitter=batcher,
        branch=settings.git_branch,
        attestation_secret=reveal(settings.attestation_key),
    )
    register(kit, service, settings.git_publish_concurrency)
    kit.background(batcher.run)
    kit.background(publisher.recheck_remote)
    if settings.gitops_repo_url:
        # Reported, never gating readiness: with the remote down requests are still taken
        # and wait (the batcher retries); readiness is the kit's database and NATS.
        kit.dependencies["gitops_remote"] = repository.check_remote
    return kit
