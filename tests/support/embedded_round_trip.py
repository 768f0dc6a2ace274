"""Both embedded servers written to, restarted on the same state, read back, then removed.

Self-contained on purpose: it imports the standard library, psycopg, nats-py and
``libs.embedded`` only. As root, ``tests/integration/test_embedded_servers.py`` runs it as
a script in a process of ``nobody``, from a copy outside the checkout, because the checkout
and its virtualenv may be where ``nobody`` cannot enter (root's home, a CI runner's private
directory). ``python embedded_round_trip.py <state>`` prints the summary as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import nats
import psycopg

from libs import embedded

STREAM, SUBJECT, DURABLE = "EMBEDDED_CHECK", "embedded.check.kept", "embedded-check"


async def exercise_servers(state: Path) -> dict[str, Any]:
    """Write through both servers, restart them on the same ``state``, read the writes back,
    then remove the Postgres data. Returns what a caller asserts on (JSON-serialisable)."""
    data_dir = state / "postgres"
    postgres, bus = embedded.EmbeddedPostgres(data_dir), embedded.EmbeddedNats(state / "nats")
    try:
        postgres.start()
        bus.start()
        row_id = uuid.uuid4()
        with psycopg.connect(postgres.dsn()) as conn:
            conn.execute("CREATE TABLE kept (id uuid PRIMARY KEY, note text NOT NULL)")
            conn.execute("INSERT INTO kept (id, note) VALUES (%s, 'check')", [row_id])
        nc = await nats.connect(bus.url)
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[SUBJECT])
        await js.publish(SUBJECT, b"kept")
        reader = await js.pull_subscribe(SUBJECT, durable=DURABLE, stream=STREAM)
        [message] = await reader.fetch(1, timeout=10)
        await message.ack_sync()
        await nc.close()
        location = postgres.data_location()
        record = data_dir / embedded.LOCATION_RECORD
        assert postgres.process is not None
        assert isinstance(postgres.process.args, list)
        first = {
            "binary": str(postgres.process.args[0]),
            "location": str(location),
            "record": record.read_text().strip() if record.exists() else None,
            "consumed": message.data.decode(),
            "log_in_data_dir": (data_dir / "postgres.log").stat().st_size > 0,
        }
    finally:
        postgres.stop()
        bus.stop()

    # A second run on the same state, as `make run` run again: the same cluster and stream.
    postgres, bus = embedded.EmbeddedPostgres(data_dir), embedded.EmbeddedNats(state / "nats")
    try:
        postgres.start()
        bus.start()
        with psycopg.connect(postgres.dsn()) as conn:
            rows = conn.execute("SELECT note FROM kept WHERE id = %s", [row_id]).fetchall()
        nc = await nats.connect(bus.url)
        js = nc.jetstream()
        stored = await js.get_msg(STREAM, 1)
        consumer = await js.consumer_info(STREAM, DURABLE)
        await nc.close()
        location_again = postgres.data_location()
    finally:
        postgres.stop()
        bus.stop()

    postgres.remove_data()
    return {
        **first,
        "euid": os.geteuid(),
        "data_dir": str(data_dir.resolve()),
        "location_again": str(location_again),
        "rows_again": [list(row) for row in rows],
        "message_again": (stored.data or b"").decode(),
        "ack_floor_again": consumer.ack_floor.stream_seq if consumer.ack_floor else None,
        "location_left": location.exists(),
        "data_dir_left": data_dir.exists(),
        # Where this process's code came from: a caller checks none of it is the checkout's.
        "module_files": sorted(
            str(module.__file__) for module in list(sys.modules.values()) if getattr(module, "__file__", None)
        ),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(exercise_servers(Path(sys.argv[1])))))
