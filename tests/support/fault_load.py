"""A steady stream of preview requests through the HTTP API, sent the way a careful client
sends them while faults are injected, and the checks that nothing was lost or duplicated."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import nats
import psycopg

from services.tools.platformd.registry import BACKEND_SERVICES
from tests.support.bus import stream_events
from tests.support.stack import RunningStack

FINAL = {"ready", "failed", "rejected"}
TEAM = "payments"


def preview_body(app: str) -> dict[str, object]:
    return {
        "app": app,
        "team": TEAM,
        "class": "preview",
        "region": "us-west-2",
        "ttl_hours": 4,
        "owner": "alice@example.com",
        "repository": "https://github.com/example/app.git",
    }


def without_team_limits(stack: RunningStack, team: str = TEAM) -> None:
    """Lift the preview class's cap on a team's live environments and give ``team`` a budget
    no load exhausts: the fault tests send one team far more previews than those limits allow,
    and test faults, not limits (which have tests of their own)."""
    with stack.client("root@example.com", "admin") as admin:
        preview = admin.get("/v1/environment-classes/preview")
        assert preview.status_code == 200, preview.text
        uncapped = {**preview.json(), "max_environments_per_team": None}
        uncapped.pop("name")
        lifted = admin.put("/v1/environment-classes/preview", json=uncapped)
        assert lifted.status_code == 200, lifted.text
        budget = admin.put(f"/v1/teams/{team}/budget", json={"monthly_usd": 1_000_000_000})
        assert budget.status_code == 200, budget.text


def create_with_retries(api: httpx.Client, body: dict[str, object], key: str, deadline: float) -> str:
    """What a careful client does: retry 5xx and connection errors with the same Idempotency-Key."""
    while True:
        try:
            response = api.post("/v1/environment-requests", json=body, headers={"Idempotency-Key": key})
            if response.status_code in (200, 201):
                return str(response.json()["id"])
            assert response.status_code >= 500, response.text
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"could not create {key}"
        time.sleep(0.2)


class SteadyLoad:
    """``count`` creates, one every ``interval`` seconds, each retried until it is accepted.

    A create that waits out an outage does not hold back the next ones (a few run at once),
    so the stream stays steady while a service, the broker or the database is down.
    """

    def __init__(
        self, api: httpx.Client, app_prefix: str, count: int, interval: float, give_up_after: float = 120
    ) -> None:
        self.api = api
        self.app_prefix = app_prefix
        self.count = count
        self.interval = interval
        self.give_up_after = give_up_after
        self.accepted = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="steady-load")
        self._futures: list[Future[str]] = []
        self._scheduler = threading.Thread(target=self._schedule, name="steady-load", daemon=True)

    def start(self) -> SteadyLoad:
        self._scheduler.start()
        return self

    def _schedule(self) -> None:
        begin = time.monotonic()
        for n in range(self.count):
            time.sleep(max(0.0, begin + n * self.interval - time.monotonic()))
            self._futures.append(self._pool.submit(self._create, n))

    def _create(self, n: int) -> str:
        app = f"{self.app_prefix}-{n}"
        request_id = create_with_retries(
            self.api, preview_body(app), app, time.monotonic() + self.give_up_after
        )
        with self._lock:
            self.accepted += 1
        return request_id

    @property
    def submitting(self) -> bool:
        return self._scheduler.is_alive()

    def ids(self) -> list[str]:
        """Wait for every create to be accepted; the request ids in submission order."""
        self._scheduler.join()
        try:
            return [future.result() for future in self._futures]
        finally:
            self._pool.shutdown()


def list_requests(api: httpx.Client, team: str = TEAM) -> list[dict[str, Any]]:
    """Every request of ``team`` as the API lists them (all pages)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"team": team, "limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/v1/environment-requests", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def wait_until_final(api: httpx.Client, ids: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the API until every request in ``ids`` is ready, failed or rejected."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    latest: dict[str, dict[str, Any]] = {}
    while True:
        latest = {item["id"]: item for item in _list_or_empty(api) if item["id"] in wanted} or latest
        waiting = [i for i in wanted if latest.get(i, {}).get("status") not in FINAL]
        if not waiting:
            return latest
        if time.monotonic() > deadline:
            shown = Counter(str(latest.get(i, {}).get("status")) for i in waiting)
            raise AssertionError(
                f"{len(waiting)} of {len(wanted)} requests not final after {timeout:.0f}s: {shown}"
            )
        time.sleep(1)


def _list_or_empty(api: httpx.Client) -> list[dict[str, Any]]:
    try:
        return list_requests(api)
    except (httpx.TransportError, AssertionError):
        return []  # the gateway or intake is still recovering; ask again


def commits_by_request(stack: RunningStack) -> dict[tuple[str, str], list[str]]:
    """Commits of the GitOps remote's history by (``Platform-Request``, ``Platform-Generation``)."""
    log = stack.git("log", "--format=%H%x00%B%x01", "main")
    commits: dict[tuple[str, str], list[str]] = {}
    for entry in filter(str.strip, log.split("\x01")):
        sha, _, message = entry.strip().partition("\x00")
        request = re.search(r"^Platform-Request: (\S+)$", message, re.MULTILINE)
        generation = re.search(r"^Platform-Generation: (\S+)$", message, re.MULTILINE)
        if request:
            key = (request.group(1), generation.group(1) if generation else "?")
            commits.setdefault(key, []).append(sha)
    return commits


def events_per_request(stack: RunningStack, event_type: str) -> Counter[str]:
    """How many ``event_type`` events the stream holds for each request."""

    async def read() -> Counter[str]:
        nc = await nats.connect(servers=stack.environment["PLATFORM_NATS_URL"].split(","))
        try:
            envelopes = await stream_events(
                nc.jetstream(),
                stack.environment["PLATFORM_EVENTS_STREAM"],
                stack.environment["PLATFORM_EVENTS_SUBJECT_PREFIX"],
                event_type,
            )
        finally:
            await nc.close()
        return Counter(envelope.subject for envelope in envelopes)

    return asyncio.run(read())


def unpublished_outbox_rows(dsn: str) -> dict[str, int]:
    """Outbox rows not yet published, per service schema."""
    return _count_per_schema(dsn, "SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")


def dead_letters(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every service's dead letters (consumer, event type, subject, error), per schema."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(dsn) as conn:
        for schema in BACKEND_SERVICES:
            rows = conn.execute(
                f"SELECT consumer, event_type, subject, error FROM {schema}.dead_letters ORDER BY id"
            ).fetchall()
            if rows:
                found[schema] = rows
    return found


def where_requests_stopped(stack: RunningStack, api: httpx.Client, ids: list[str]) -> str:
    """For a failed run: each unfinished request's timeline, the dead letters and what the
    outboxes still hold, so the report says where the work stopped."""
    lines = []
    for request_id in ids:
        current = api.get(f"/v1/environment-requests/{request_id}").json()
        if current.get("status") in FINAL:
            continue
        timeline = api.get(f"/v1/environment-requests/{request_id}/events").json().get("items", [])
        steps = [f"{item.get('type')}->{item.get('status_after')}" for item in timeline]
        lines.append(f"{request_id} {current.get('status')} {current.get('last_error')!r}: {steps}")
    lines.append(f"dead letters: {dead_letters(stack.dsn)}")
    lines.append(f"unpublished outbox rows: {unpublished_outbox_rows(stack.dsn)}")
    return "\n".join(lines)


def _count_per_schema(dsn: str, query: str) -> dict[str, int]:
    counts = {}
    with psycopg.connect(dsn) as conn:
        for schema in BACKEND_SERVICES:
            row = conn.execute(query.format(schema=schema)).fetchone()
            counts[schema] = row[0] if row else 0
    return counts


def wait_for_empty_outboxes(dsn: str, timeout: float = 30) -> dict[str, int]:
    """Poll until every outbox is published; returns what is left at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = {schema: n for schema, n in unpublished_outbox_rows(dsn).items() if n}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def assert_each_ready_exactly_once(
    stack: RunningStack, api: httpx.Client, ids: list[str], app_prefix: str, settle_timeout: float
) -> None:
    """What a user would check after the storm: each request listed once and ``ready``, one
    commit per request generation in the GitOps remote, one ``request.bootstrapped`` each,
    every outbox published, no dead letters."""
    assert ids, "no requests were sent"
    assert len(set(ids)) == len(ids), "two creates got the same id"
    try:
        final = wait_until_final(api, ids, settle_timeout)
    except AssertionError as stuck:
        raise AssertionError(f"{stuck}\n{where_requests_stopped(stack, api, ids)}") from None
    not_ready = {i: (r["status"], r.get("last_error")) for i, r in final.items() if r["status"] != "ready"}
    assert not not_ready, f"{len(not_ready)} of {len(ids)} not ready: {not_ready}"

    listed = [item for item in list_requests(api) if item["app"].startswith(app_prefix + "-")]
    listed_ids = Counter(item["id"] for item in listed)
    assert sorted(listed_ids) == sorted(ids), "the API lists other requests than were created"
    assert max(listed_ids.values()) == 1, f"listed twice: {[i for i, n in listed_ids.items() if n > 1]}"
    assert len(listed) == len(ids), "a retried create produced a duplicate request"

    commits = commits_by_request(stack)
    for request_id in ids:
        generation = str(final[request_id]["generation"])
        mine = {key: shas for key, shas in commits.items() if key[0] == request_id}
        assert mine == {(request_id, generation): [final[request_id]["git_commit_sha"]]}, (request_id, mine)

    bootstrapped = events_per_request(stack, "request.bootstrapped")
    assert {i: bootstrapped[i] for i in ids} == dict.fromkeys(ids, 1), "a request became ready twice"

    assert wait_for_empty_outboxes(stack.dsn) == {}, "outbox rows left unpublished"
    assert dead_letters(stack.dsn) == {}
