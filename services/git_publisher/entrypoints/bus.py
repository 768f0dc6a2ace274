"""git-publisher's bus entrypoints: one consumer for the events that change the GitOps tree."""

from __future__ import annotations

from libs.service_kit import ServiceKit
from services.git_publisher.service_layer.handlers import GitPublisherService


def register(kit: ServiceKit, service: GitPublisherService, service_concurrency: int) -> None:
    # One consumer for both event types, ordered by request: a teardown must never be
    # overtaken by that request's rendered bundle (or an older bundle by a newer one), or
    # the branch would end up holding a directory that should be gone or stale. The server
    # delivers only these two types (the durable's filter subjects come from the handlers).
    kit.consume(
        "requests",
        "request.>",
        {
            "request.rendered": service.publish,
            "request.teardown_requested": service.unpublish,
        },
        ordered_by_subject=True,
        # Handlers mostly wait for a shared, batched push and hold no database connection
        # meanwhile (two-phase handlers), so many can be in flight to fill each batch.
        concurrency=service_concurrency,
    )
