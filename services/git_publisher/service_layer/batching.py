"""Group commit: changes that arrive within a short window share one fetch and one push.

Handlers run in the kit consumer's per-message transactions. Each one hands its change to
the :class:`CommitBatcher` and waits for the result; only then does it record the
publication and stage its event, so no message is acknowledged before its commit is on
the remote. The batcher collects changes for ``window_seconds`` after the first one (and
never starts batches closer together than that), then publishes them in one go. Each
handler gets its own change's outcome: a change the remote refuses, or whose generation
marker is unreadable, fails only its own handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from libs.errors import TransientError
from services.git_publisher.domain.changes import Change
from services.git_publisher.service_layer.publisher import PublishResult

log = logging.getLogger(__name__)

# Bounds the size of one fast-import stream and push; the rest waits for the next batch.
MAX_BATCH = 100
# After shutdown begins, keep serving until the queue has been idle this long: handlers that
# were already running still reach the batcher instead of failing (and being redelivered).
DRAIN_GRACE_SECONDS = 0.5


class BatchPublisher(Protocol):
    async def publish(self, changes: list[Change]) -> Sequence[PublishResult | Exception]:
        """One outcome per change, in order: its result or the error it alone failed with;
        raises when the batch as a whole failed."""
        ...


class ShuttingDown(TransientError):
    """The batcher stopped before the change was published (a rolling restart).

    Transient: the event is redelivered to this or another replica, and a restart must not
    cost the request one of its few attempts for a permanent failure.
    """

    def __init__(self) -> None:
        super().__init__("git publisher is shutting down")


@dataclass
class _Pending:
    change: Change
    future: asyncio.Future[PublishResult]
    enqueued_at: float = field(default=0.0)


class CommitBatcher:
    """Feeds a :class:`BatchPublisher` with batches of the changes submitted concurrently."""

    def __init__(
        self, publisher: BatchPublisher, *, window_seconds: float, max_batch: int = MAX_BATCH
    ) -> None:
        self.publisher = publisher
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._closed = False
        self._last_batch_started = float("-inf")
        self._last_activity = 0.0

    async def submit(self, change: Change) -> PublishResult:
        """Publish ``change`` with the next batch; returns once it is committed (and pushed)."""
        if self._closed:
            # Raised, not swallowed: the handler's transaction rolls back and the event is
            # redelivered to this or another replica.
            raise ShuttingDown
        loop = asyncio.get_running_loop()
        pending = _Pending(change, loop.create_future(), loop.time())
        self._last_activity = pending.enqueued_at
        self._queue.put_nowait(pending)
        return await pending.future

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve batches until ``stopping`` is set and nothing arrived for a short grace period."""
        loop = asyncio.get_running_loop()
        try:
            while not (
                stopping.is_set()
                and self._queue.empty()
                and loop.time() - self._last_activity > DRAIN_GRACE_SECONDS
            ):
                try:
                    first = await asyncio.wait_for(self._queue.get(), timeout=0.1)
                except TimeoutError:
                    continue
                batch = await self._collect(first)
                await self._publish(batch)
                self._last_activity = loop.time()
        finally:
            # Closing and failing the leftovers happen without an await in between, so no
            # submit can slip into the queue after the last look at it.
            self._closed = True
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(ShuttingDown())

    async def _collect(self, first: _Pending) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [first]
        # At most one batch per window: a change that arrived while the previous batch was
        # pushing waits for the window measured from that batch's start.
        deadline = max(first.enqueued_at, self._last_batch_started) + self.window_seconds
        while len(batch) < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout=remaining))
            except TimeoutError:
                break
        self._last_batch_started = loop.time()
        return batch

    async def _publish(self, batch: list[_Pending]) -> None:
        # A handler that gave up waiting (cancelled) no longer needs its change published;
        # leaving it out keeps its redelivery the only writer of that change.
        live = [pending for pending in batch if not pending.future.done()]
        if not live:
            return
        try:
            results = await self.publisher.publish([pending.change for pending in live])
        except BaseException as error:
            # Every waiting handler learns the outcome, even when the batcher itself is being
            # cancelled at shutdown; otherwise its transaction would wait forever.
            failure = error if isinstance(error, Exception) else ShuttingDown()
            for pending in live:
                if not pending.future.done():
                    pending.future.set_exception(failure)
            if not isinstance(error, Exception):
                raise
            return
        for pending, result in zip(live, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
