"""What a service consumes and publishes on the event bus, declared beside its handlers.

Each service's ``entrypoints/bus.py`` declares one :class:`ServiceTopology`: its durable
consumers (name -> {event class: handler}) and the event classes its outbox stages. A
declaration connects to nothing, so tools read it without running the service
(``services/tools/topology.py`` collects them all; the AsyncAPI document, the docs' event
catalog and the services' bus subjects are derived from it), and the kit binds its handlers
to the service object at start (:meth:`libs.service_kit.ServiceKit.subscribe`).

Keys are event classes, as in cosmicpython's ``EVENT_HANDLERS``: the type string and the
subject follow from :data:`contracts.events.EVENT_TYPE_OF`, so a declaration cannot name an
event that does not exist.

Each handler is registered through :func:`reexecuted_on_replay` or :func:`skipped_on_replay`,
which say what ``platformctl events replay --consumer`` does with it and why
(:class:`libs.inbox.ReplayPolicy`); the dry run and docs/operations.md show those reasons.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from contracts.events import EVENT_TYPE_OF, EVENT_TYPES
from libs.inbox import (
    UNDECLARED,
    GiveUpHook,
    Handler,
    Preload,
    ReplayPolicy,
    RetryHook,
    StartFrom,
    fail_request,
    report_retry,
)

# A handler as the service class spells it: a method, or a property returning a
# :class:`libs.inbox.SideEffect` (handlers whose git push or cluster apply runs before the
# inbox transaction). Type checkers see both as callables taking the service object.
HandlerRef = Callable[..., Any]


@dataclass(frozen=True)
class Registration:
    """A handler and what a replay does with it."""

    handler: HandlerRef
    replay: ReplayPolicy


def reexecuted_on_replay(handler: HandlerRef, why: str) -> Registration:
    """``handler`` runs again on a replay: its effects are idempotent (``why`` says how)."""
    return Registration(handler, ReplayPolicy(True, why))


def skipped_on_replay(handler: HandlerRef, why: str) -> Registration:
    """A replay skips ``handler``: running it again would repeat an effect or move a request's state."""
    return Registration(handler, ReplayPolicy(False, why))


def _unwrapped(entry: HandlerRef | Registration) -> HandlerRef:
    return entry.handler if isinstance(entry, Registration) else entry


def events_under(namespace: str) -> tuple[type[Any], ...]:
    """Every event class whose type is ``<namespace>.<name>``, in :data:`EVENT_TYPES` order.

    For a consumer that must see every event of a kind, including ones added later (intake
    projects a request's status from all of its events).
    """
    return tuple(model for name, model in EVENT_TYPES.items() if name.startswith(f"{namespace}."))


def event_filter(event_types: Iterable[str]) -> str:
    """The narrowest subject pattern (relative to the events prefix) covering ``event_types``.

    One type is its own filter; several share their leading tokens followed by ``>``. It
    names the consumer's interest, and a handler's type is checked against it; the durable's
    server-side filters are the types themselves and its redrives (:mod:`libs.inbox`).
    """
    token_lists = [event_type.split(".") for event_type in sorted(set(event_types))]
    if not token_lists:
        raise ValueError("a consumer needs at least one event type")
    if len(token_lists) == 1:
        return ".".join(token_lists[0])
    shared: list[str] = []
    for tokens in zip(*token_lists, strict=False):
        if len(set(tokens)) > 1:
            break
        shared.append(tokens[0])
    return ".".join([*shared, ">"])


def bind(handler: HandlerRef, owner: object) -> Handler:
    """``handler`` as the kit calls it: bound to ``owner``, the service object that holds its state."""
    if isinstance(handler, property):
        return cast(Handler, handler.__get__(owner, type(owner)))
    return cast(Handler, types.MethodType(handler, owner))


@dataclass(frozen=True)
class Consumer:
    """One durable consumer: ``<service>-<name>`` on the stream, its handlers by event class.

    ``name`` is the durable's name on running deployments: renaming it makes a new durable
    that starts from new events, and leaves the old one behind.
    """

    name: str
    handlers: Mapping[type[Any], HandlerRef | Registration]
    ordered_by_subject: bool = False
    # The messages of one fetch in one transaction (handlers that only touch Postgres; see
    # libs.inbox): fewer round trips for a consumer of many small events.
    batched: bool = False
    # For a batched consumer: what its handlers would each read, read once per batch into
    # ``tx.loaded`` (a method of the service, like the handlers).
    preload: HandlerRef | None = None
    on_give_up: GiveUpHook = fail_request
    on_retry: RetryHook | None = report_retry
    start_from: StartFrom = "new"

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted(EVENT_TYPE_OF[model] for model in self.handlers))

    @property
    def event_filter(self) -> str:
        return event_filter(self.event_types)

    def bound_handlers(self, owner: object) -> dict[str, Handler]:
        return {
            EVENT_TYPE_OF[model]: bind(_unwrapped(entry), owner) for model, entry in self.handlers.items()
        }

    def bound_preload(self, owner: object) -> Preload | None:
        return cast(Preload, types.MethodType(self.preload, owner)) if self.preload else None

    @property
    def replay_policies(self) -> dict[str, ReplayPolicy]:
        """What a replay does with each handled type (a bare handler is skipped)."""
        return {
            EVENT_TYPE_OF[model]: entry.replay if isinstance(entry, Registration) else UNDECLARED
            for model, entry in self.handlers.items()
        }


@dataclass(frozen=True)
class ServiceTopology:
    """A service's place on the event bus: what it consumes and what its outbox stages.

    ``publishes`` lists every event class the service stages, the ``request.failed`` and
    ``request.stage_retrying`` its consumers' give-up and retry hooks report included; a
    test compares it with the event classes the service's code constructs.
    """

    name: str
    consumers: tuple[Consumer, ...] = ()
    publishes: tuple[type[Any], ...] = ()

    @property
    def consumed_types(self) -> frozenset[str]:
        return frozenset(event_type for consumer in self.consumers for event_type in consumer.event_types)

    @property
    def published_types(self) -> frozenset[str]:
        return frozenset(EVENT_TYPE_OF[model] for model in self.publishes)
