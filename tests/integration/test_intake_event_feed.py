"""The all-requests feed never skips an entry, whatever order writers commit in."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.envelope import new_event
from contracts.events import RequestFailed
from contracts.models import RequestSpec
from libs.database import open_pool
from libs.migrations import discover, migrate
from services.intake.adapters import repository
from services.intake.domain.model import EnvironmentRequest

SPEC = RequestSpec(
    app="api",
    team="payments",
    class_name="preview",
    region="us-east-1",
    ttl_hours=4,
    owner="alice",
    repository="https://github.com/example/api.git",
)


async def test_a_late_committing_writer_is_not_skipped(database: str) -> None:
    await migrate(database, "intake", discover("services.intake"))
    pool = await open_pool(database, "intake", "feed-test", max_size=4)
    try:
        request = EnvironmentRequest.submit(
            SPEC, "alice", datetime.now(UTC), request_id="req-00000000000000f1"
        )
        async with pool.connection() as conn, conn.transaction():
            await repository.add(conn, request)

        def event(n: int) -> tuple[object, RequestFailed]:
            data = RequestFailed(request_id=request.id, generation=n, stage="test", error="x", attempts=1)
            return new_event("request.failed", "test", request.id, data), data

        async def feed(after: repository.FeedPosition) -> list[int]:
            async with pool.connection() as conn:
                rows = await repository.all_timelines(
                    conn, teams_in_scope=None, after=after, request_id=None, limit=100
                )
            return [row["data"]["generation"] for row in rows]

        start = repository.FeedPosition(0, 0)
        # Writer A starts first (older transaction) but commits last.
        slow = await pool.getconn()
        await slow.execute("BEGIN")
        first, first_data = event(1)
        await repository.append_timeline(slow, request.id, first, first_data, applied=False, status_after="x")
        async with pool.connection() as conn, conn.transaction():
            second, second_data = event(2)
            await repository.append_timeline(
                conn, request.id, second, second_data, applied=False, status_after="x"
            )
        # While A is open, B (committed) is held back: showing it now would let a follower's
        # cursor pass A's entry before A becomes visible.
        assert await feed(start) == []
        await slow.execute("COMMIT")
        await pool.putconn(slow)
        assert await feed(start) == [1, 2]
    finally:
        await pool.close()
