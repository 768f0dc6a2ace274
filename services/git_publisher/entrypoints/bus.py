"""git-publisher's bus entrypoints: one consumer for the events that change the GitOps tree."""

from __future__ import annotations

from contracts.events import (
    RequestFailed,
    RequestPublished,
    RequestRendered,
    RequestStageRetrying,
    RequestTeardownRequested,
    RequestUnpublished,
)
from libs.service_kit import ServiceKit
from libs.topology import Consumer, ServiceTopology, reexecuted_on_replay
from services.git_publisher.service_layer.handlers import GitPublisherService


def register(kit: ServiceKit, service: GitPublisherService, service_concurrency: int) -> None:
    kit.subscribe(TOPOLOGY, service, concurrency={"requests": service_concurrency})


TOPOLOGY = ServiceTopology(
    name="git_publisher",
    consumers=(
        # One consumer for both event types, ordered by request: a teardown normally
        # follows that request's rendered bundle (and an older bundle a newer one). A retry
        # can change that order; the generation markers on the branch then fence the older
        # change out, so the branch never holds a directory that should be gone or stale. The
        # server delivers only these two types (the durable's filter subjects come from the
        # handlers). Handlers mostly wait for a shared, batched push and hold no database
        # connection meanwhile (two-phase handlers), so many can be in flight to fill each
        # batch: the concurrency is git-publisher's own setting.
        Consumer(
            "requests",
            {
                RequestRendered: reexecuted_on_replay(
                    GitPublisherService.publish,
                    "the request's directory is a pure function of the bundle: an unchanged tree makes "
                    "no commit; a newer generation or a teardown on the branch wins",
                ),
                RequestTeardownRequested: reexecuted_on_replay(
                    GitPublisherService.unpublish,
                    "removing a directory that is gone already makes no commit",
                ),
            },
            ordered_by_subject=True,
        ),
    ),
    publishes=(RequestPublished, RequestUnpublished, RequestFailed, RequestStageRetrying),
)
