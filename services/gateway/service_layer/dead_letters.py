"""Use cases: the dead letters of every service, listed together, and their replay.

Every service keeps its own dead letters (:mod:`libs.dead_letters`); the list asks each of
them at once and names any that did not answer instead of failing the whole listing.
"""

from __future__ import annotations

import asyncio

import msgspec

from contracts.rpc import ListDeadLetters, ReplayDeadLetter
from libs.errors import Unavailable
from services.gateway.adapters.services import BACKEND_SERVICES, Services
from services.gateway.domain.resources import DeadLetter, DeadLetterPage


async def list_dead_letters(
    services: Services, service: str | None, query: ListDeadLetters
) -> DeadLetterPage:
    """Newest first, from ``service`` or every backend. Of every backend, those that do not
    answer are listed in ``unavailable``; a single requested one that does not answer is
    :class:`Unavailable` (503)."""
    names = [service] if service else list(BACKEND_SERVICES)
    pages = await asyncio.gather(
        *(services.list_dead_letters(name, query) for name in names), return_exceptions=True
    )
    items: list[DeadLetter] = []
    unavailable: list[str] = []
    for name, page in zip(names, pages, strict=True):
        if isinstance(page, Unavailable) and service is None:
            unavailable.append(name)
            continue
        if isinstance(page, BaseException):
            raise page
        items.extend(msgspec.structs.replace(item, service=name) for item in page.items)
    items.sort(key=lambda item: item.created_at, reverse=True)
    return DeadLetterPage(items=items, unavailable=unavailable)


async def replay(services: Services, name: str, command: ReplayDeadLetter) -> DeadLetter:
    """Deliver the event again to the consumer that gave up on it; 409 if replayed already."""
    replayed = await services.replay_dead_letter(name, command)
    return msgspec.structs.replace(replayed, service=name)
