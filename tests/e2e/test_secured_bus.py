"""The bus as ``make run`` secures it, and secrets that stay secret: one ``platformd dev`` with
its embedded NATS (the bundled nats-server) admitting only the platform's NKEY identities,
started with distinctive secrets of the user's.

- every service runs the whole production flow (approval, reconcile, extend, delete), a dry
  run, a catalog change and the dead-letter listing on its own identity: a permission the
  code needs and the model lacks fails here;
- anonymous clients are refused; the read-only subscriber reads events through a durable of
  its own and nothing else; a service's identity cannot call another service's verbs (a
  forged admin actor never reaches the handler);
- no secret appears in any log line, banner, error body, event or ``platformd config``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from libs.bus import durable_name
from libs.settings import SERVER_VARIABLES
from services.tools.platformd.dev_stack import NATS_ROLE, POSTGRES_ROLE
from services.tools.platformd.registry import SERVICES, own_secrets, platform_secrets
from tests.support.api_flows import SIGNATURE_HEADER, example, signature
from tests.support.gateway import mint
from tests.support.platformd_dev import DevStack, platformd_dev

JWT_SECRET = "jwt-q7v3-distinctive-" + "j" * 24
APPROVAL_SECRET = "approval-k2m9-distinctive-" + "a" * 24
ATTESTATION_SECRET = "attestation-x4p8-distinctive-" + "t" * 24
USER_TOKEN = "user-token-r5w1-distinctive"
STREAM = "PLATFORM_EVENTS"
EVENTS = "platform.events"
ALICE = "alice@example.com"
BOB = "bob@example.com"
SHORT = 1.0


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    secrets = {
        "PLATFORM_JWT_HS256_SECRET": JWT_SECRET,
        "PLATFORM_APPROVAL_HMAC_SECRET": APPROVAL_SECRET,
        "PLATFORM_ATTESTATION_HMAC_SECRET": ATTESTATION_SECRET,
        # A user's own token in the shell that runs `make run`: no service reads it.
        "PLATFORM_TOKEN": USER_TOKEN,
    }
    with platformd_dev(
        tmp_path_factory.mktemp("secured"), environment=secrets, embedded_nats=True
    ) as running:
        yield running


def client(dev: DevStack, actor: str, role: str, teams: list[str] | None = None) -> httpx.Client:
    claims: dict[str, Any] = {"sub": actor.split("@", maxsplit=1)[0], "email": actor}
    if teams is not None:
        claims["teams"] = teams
    token = mint(role, secret=JWT_SECRET, ttl=3600, **claims)
    return httpx.Client(base_url=dev.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def wait_for(api: httpx.Client, request_id: str, statuses: set[str], timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = api.get(f"/v1/environment-requests/{request_id}").json()
        if view.get("status") in statuses:
            return view
        time.sleep(0.3)
    raise AssertionError(f"{request_id} never reached {statuses}: {view}")


class Identity:
    """A NATS connection as one of the platform's identities, with the server's refusals."""

    def __init__(self, dev: DevStack, name: str, inbox_prefix: str = "_INBOX") -> None:
        self.dev, self.name, self.inbox_prefix = dev, name, inbox_prefix
        self.refusals: list[str] = []

    async def connect(self) -> NatsClient:
        async def refused(error: Exception) -> None:
            self.refusals.append(str(error).lower())

        return await nats.connect(
            self.dev.nats_url,
            nkeys_seed=str(self.dev.seed_file(self.name)),
            inbox_prefix=self.inbox_prefix,
            error_cb=refused,
            allow_reconnect=False,
        )

    def refused(self, subject: str) -> bool:
        return any(
            "permissions violation" in refusal and subject.lower() in refusal for refusal in self.refusals
        )


def run(call: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(call())  # type: ignore[arg-type]


# -- every service's whole flow on its own identity ----------------------------------------------


@pytest.fixture(scope="module")
def flow(dev: DevStack) -> dict[str, Any]:
    """Production (approval, reconcile, extend, delete), a dry run, a catalog change and the
    dead letters: every consumer and every service's endpoints, as the services' identities."""
    seen: dict[str, Any] = {"error_bodies": []}
    with (
        client(dev, ALICE, "requester", ["payments"]) as alice,
        client(dev, BOB, "approver") as bob,
        client(dev, "root@example.com", "admin") as admin,
    ):
        created = alice.post("/v1/environment-requests", json=example("production", ttl_hours=12))
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        wait_for(alice, request_id, {"pending_approval"})
        headers = {SIGNATURE_HEADER: signature(request_id, BOB, secret=APPROVAL_SECRET)}
        approved = bob.post(f"/v1/environment-requests/{request_id}/approve", headers=headers)
        assert approved.status_code == 200, approved.text
        assert bob.post(f"/v1/environment-requests/{request_id}/reconcile").status_code == 202
        ready = wait_for(bob, request_id, {"ready", "failed"})
        assert ready["status"] == "ready", ready["last_error"]
        extended = alice.patch(f"/v1/environment-requests/{request_id}", json={"ttl_hours": 24})
        assert extended.status_code == 200, extended.text
        dry_run = alice.post("/v1/environment-requests?dry_run=true", json=example("preview"))
        assert dry_run.status_code == 200, dry_run.text
        assert dry_run.json()["manifests"], dry_run.text
        preview = admin.get("/v1/environment-classes/preview").json()
        new_class = {key: preview[key] for key in ("allowed_regions", "max_ttl_hours", "quota_profile")}
        upserted = admin.put("/v1/environment-classes/secured-bus", json=new_class)
        assert upserted.status_code in (200, 201), upserted.text
        letters = admin.get("/v1/dead-letters")
        assert letters.status_code == 200, letters.text
        assert letters.json()["unavailable"] == []
        deleting = alice.delete(f"/v1/environment-requests/{request_id}")
        assert deleting.status_code == 202, deleting.text
        gone = wait_for(alice, request_id, {"deleted", "failed"})
        assert gone["status"] == "deleted", gone["last_error"]
        for response in (
            alice.post("/v1/environment-requests", json={"app": "Bad App!", "team": "x"}),
            bob.post(f"/v1/environment-requests/{request_id}/approve", headers={SIGNATURE_HEADER: "forged"}),
            httpx.get(f"{dev.api_url}/v1/environment-requests", headers={"Authorization": "Bearer nope"}),
        ):
            assert response.status_code >= 400
            seen["error_bodies"].append(response.text)
        seen["request_id"] = request_id
        seen["timeline"] = alice.get(f"/v1/environment-requests/{request_id}/events").text
    return seen


def test_every_service_runs_its_whole_flow_on_its_own_identity(dev: DevStack, flow: dict[str, Any]) -> None:
    for event_type in ("request.approved", "request.published", "request.bootstrapped", "request.torn_down"):
        assert event_type in flow["timeline"]
    server_log = (dev.state_dir / "nats" / "nats-server.log").read_text()
    assert "Violation" not in server_log


# -- what the bus refuses --------------------------------------------------------------------------


def test_anonymous_connections_are_refused(dev: DevStack) -> None:
    async def anonymous() -> None:
        nc = await nats.connect(dev.nats_url, allow_reconnect=False, connect_timeout=3)
        await nc.close()

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        run(anonymous)


def test_the_subscriber_reads_events_with_its_own_durable_and_can_change_nothing(
    dev: DevStack, flow: dict[str, Any]
) -> None:
    subscriber = Identity(dev, "subscriber")
    platform_durable = durable_name("intake", "requests")

    async def session() -> dict[str, Any]:
        nc = await subscriber.connect()
        js = nc.jetstream(timeout=SHORT)
        try:
            tap = await js.pull_subscribe(
                f"{EVENTS}.>",
                durable="audit-tap",
                stream=STREAM,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            read = await tap.fetch(5, timeout=5)
            for message in read:
                await message.ack()
            before = await js.stream_info(STREAM)
            await nc.publish(f"{EVENTS}.request.approved", b"{}")
            forged = json.dumps(
                {"team": "payments", "body": {"monthly_usd": 1}, "actor": {"subject": "x", "role": "admin"}}
            )
            attempts: list[Callable[[], Awaitable[Any]]] = [
                lambda: nc.request("platform.rpc.policy.set_team_budget", forged.encode(), timeout=SHORT),
                lambda: nc.request("platform.rpc.intake.list_dead_letters", b"{}", timeout=SHORT),
                lambda: js.delete_stream(STREAM),
                lambda: js.delete_consumer(STREAM, platform_durable),
                lambda: js.pull_subscribe(f"{EVENTS}.>", durable=platform_durable, stream=STREAM),
            ]
            outcomes = []
            for attempt in attempts:
                try:
                    await attempt()
                    outcomes.append("done")
                except Exception as exc:  # the server drops the request; the client times out
                    outcomes.append(type(exc).__name__)
            await nc.flush()
            await asyncio.sleep(0.3)
            after = await js.stream_info(STREAM)
        finally:
            await nc.close()
        return {"read": read, "before": before, "after": after, "outcomes": outcomes}

    seen = run(session)
    assert seen["read"], "the subscriber's durable delivered nothing"
    assert all(message.subject.startswith(f"{EVENTS}.") for message in seen["read"])
    assert "done" not in seen["outcomes"], seen["outcomes"]
    for subject in (
        f"{EVENTS}.request.approved",
        "platform.rpc.policy.set_team_budget",
        "platform.rpc.intake.list_dead_letters",
        f"$JS.API.STREAM.DELETE.{STREAM}",
        f"$JS.API.CONSUMER.DELETE.{STREAM}.{platform_durable}",
        f"$JS.API.CONSUMER.INFO.{STREAM}.{platform_durable}",
    ):
        assert subscriber.refused(subject), (subject, subscriber.refusals)
    # Nothing changed: no event was added, the platform's durable is still there.
    assert seen["after"].state.last_seq == seen["before"].state.last_seq
    assert seen["after"].state.consumer_count == seen["before"].state.consumer_count


def test_a_forged_admin_actor_from_a_service_identity_never_reaches_the_handler(dev: DevStack) -> None:
    intake = Identity(dev, "intake", "_INBOX_intake")
    forged = {
        "team": "payments",
        "body": {"monthly_usd": 1},
        "actor": {"subject": "root", "role": "admin", "teams": []},
    }

    async def call() -> str:
        nc = await intake.connect()
        try:
            await nc.request(
                "platform.rpc.policy.set_team_budget", json.dumps(forged).encode(), timeout=SHORT
            )
        except Exception as exc:
            return type(exc).__name__
        finally:
            await nc.close()
        return "answered"

    assert run(call) != "answered"
    assert intake.refused("platform.rpc.policy.set_team_budget"), intake.refusals
    # The same call through the gateway carries the caller's verified rights instead.
    with client(dev, ALICE, "requester", ["payments"]) as alice:
        response = alice.put("/v1/teams/payments/budget", json={"monthly_usd": 1})
    assert response.status_code == 403, response.text


def test_a_push_consumer_aimed_at_an_rpc_subject_makes_no_service_act_or_answer(
    dev: DevStack, flow: dict[str, Any]
) -> None:
    """The server lets the subscriber deliver its consumer's events anywhere, intake's RPC
    subject included; intake must not take them for calls (an answer would acknowledge them)."""
    subscriber = Identity(dev, "subscriber")

    async def session() -> Any:
        nc = await subscriber.connect()
        js = nc.jetstream(timeout=5)
        try:
            trap = ConsumerConfig(
                durable_name="push-trap",
                deliver_subject="platform.rpc.intake.list_dead_letters",
                deliver_group="q",  # the micro endpoints' queue group: the server delivers to it
                deliver_policy=DeliverPolicy.LAST,
                ack_policy=AckPolicy.EXPLICIT,
                max_deliver=1,
            )
            await js.add_consumer(STREAM, trap)
            deadline = time.monotonic() + 10
            info = await js.consumer_info(STREAM, "push-trap")
            while info.delivered.consumer_seq < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                info = await js.consumer_info(STREAM, "push-trap")
            await asyncio.sleep(1.0)  # time for an answer, were one given
            return await js.consumer_info(STREAM, "push-trap")
        finally:
            await nc.close()

    info = run(session)
    assert info.delivered.consumer_seq == 1, "the server delivered nothing to the RPC subject"
    # Nobody answered on the delivery's $JS.ACK reply subject: it is still unacknowledged.
    assert (info.num_ack_pending, info.ack_floor.consumer_seq) == (1, 0)
    intake_log = (dev.state_dir / "logs" / "intake.log").read_text(errors="replace")
    assert "dropped a message on an RPC subject that is no request" in intake_log


def test_the_operators_replies_are_out_of_the_subscribers_reach(dev: DevStack, flow: dict[str, Any]) -> None:
    subscriber = Identity(dev, "subscriber")
    operator = Identity(dev, "operator", "_INBOX_operator")

    async def session() -> tuple[list[str], Any, Any]:
        tap = await subscriber.connect()
        overheard: list[str] = []

        async def overhear(message: Any) -> None:
            overheard.append(message.subject)

        await tap.subscribe("_INBOX.>", cb=overhear)
        await tap.subscribe("_INBOX_operator.>", cb=overhear)
        await tap.flush()
        nc = await operator.connect()
        try:
            js = nc.jetstream(timeout=5)
            info = await js.stream_info(STREAM)
            first = await js.get_msg(STREAM, info.state.first_seq)
            await nc.request("platform.rpc.intake.list_dead_letters", b"{}", timeout=5)
        finally:
            await nc.close()
        await asyncio.sleep(0.3)
        await tap.close()
        return overheard, info, first

    overheard, info, first = run(session)
    assert info.state.messages > 0
    assert first.data, "the operator read nothing"
    assert overheard == []
    assert subscriber.refused("_INBOX_operator.>"), subscriber.refusals


# -- secrets stay secret ---------------------------------------------------------------------------


def test_no_secret_appears_in_logs_banners_errors_events_or_config(
    dev: DevStack, flow: dict[str, Any]
) -> None:
    seeds = [
        dev.seed_file(name).read_text().strip()
        for name in (*SERVICES, "subscriber", "operator", "provisioner")
    ]
    secrets = [JWT_SECRET, APPROVAL_SECRET, ATTESTATION_SECRET, USER_TOKEN, *seeds]
    texts: dict[str, str] = {"banner and launcher output": dev.banner()}
    for log in sorted((dev.state_dir / "logs").glob("*.log")):
        texts[log.name] = log.read_text(errors="replace")
    texts["nats-server.log"] = (dev.state_dir / "nats" / "nats-server.log").read_text(errors="replace")
    texts["error bodies"] = "\n".join(flow["error_bodies"])
    texts["timeline"] = flow["timeline"]
    texts["events"] = "\n".join(_stream_payloads(dev))
    for service in SERVICES:
        texts[f"platformd config {service}"] = _platformd_config(service, dev)
    assert "your PLATFORM_JWT_HS256_SECRET" in dev.banner()
    assert "your PLATFORM_APPROVAL_HMAC_SECRET" in dev.banner()
    leaks = [(where, secret[:12]) for where, text in texts.items() for secret in secrets if secret in text]
    assert leaks == []
    assert sum(len(text) for text in texts.values()) > 10_000, "nothing much was checked"


def test_each_process_holds_only_the_secrets_its_settings_declare(dev: DevStack) -> None:
    """Read from /proc/<pid>/environ of every child: the launcher's environment held all of
    them (and a user's token), each service got its own only."""
    ledger = json.loads((dev.state_dir / "platformd.pids").read_text())
    children = {entry["role"]: entry["pid"] for entry in ledger["processes"] if entry["role"] in SERVICES}
    assert set(children) == set(SERVICES)
    every_secret = platform_secrets()
    held: dict[str, set[str]] = {}
    for service, pid in children.items():
        entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0].decode() for entry in entries if entry}
        held[service] = {name for name in names if name.removesuffix("_FILE") in every_secret}
        declared = own_secrets(service)
        assert {name.removesuffix("_FILE") for name in held[service]} <= declared, service
    assert "PLATFORM_APPROVAL_HMAC_SECRET" not in held["gateway"]
    assert "PLATFORM_ATTESTATION_HMAC_SECRET" not in held["gateway"]
    assert "PLATFORM_POSTGRES_DSN" not in held["gateway"]
    assert "PLATFORM_JWT_HS256_SECRET" in held["gateway"]
    assert {"PLATFORM_APPROVAL_HMAC_SECRET", "PLATFORM_ATTESTATION_HMAC_SECRET"} <= held["approval"]
    assert "PLATFORM_JWT_HS256_SECRET" not in held["intake"]
    assert not any("PLATFORM_TOKEN" in names for names in held.values())
    holders = {service for service, names in held.items() if "PLATFORM_ATTESTATION_HMAC_SECRET" in names}
    assert holders == {"approval", "git_publisher"}


def test_the_embedded_servers_hold_no_secret_of_the_launchers(dev: DevStack) -> None:
    """nats-server (and postgres, when embedded) inherited the launcher's whole environment."""
    ledger = json.loads((dev.state_dir / "platformd.pids").read_text())
    servers = {
        entry["role"]: entry["pid"]
        for entry in ledger["processes"]
        if entry["role"] in (NATS_ROLE, POSTGRES_ROLE)
    }
    assert NATS_ROLE in servers
    for role, pid in servers.items():
        environment = Path(f"/proc/{pid}/environ").read_bytes()
        names = {entry.split(b"=", 1)[0].decode() for entry in environment.split(b"\0") if entry}
        assert names <= set(SERVER_VARIABLES), (role, names - set(SERVER_VARIABLES))
        for secret in (JWT_SECRET, APPROVAL_SECRET, ATTESTATION_SECRET, USER_TOKEN):
            assert secret.encode() not in environment, role


def _stream_payloads(dev: DevStack) -> list[str]:
    """Every event on the stream with its headers, read as the operator."""
    operator = Identity(dev, "operator", "_INBOX_operator")

    async def read() -> list[str]:
        nc = await operator.connect()
        js = nc.jetstream(timeout=5)
        try:
            info = await js.stream_info(STREAM)
            messages = [
                await js.get_msg(STREAM, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
        finally:
            await nc.close()
        return [
            (message.data or b"").decode() + json.dumps(dict(message.headers or {})) for message in messages
        ]

    payloads: list[str] = run(read)
    assert payloads, "no events read"
    return payloads


def _platformd_config(service: str, dev: DevStack) -> str:
    environment = {
        "PATH": "/usr/bin:/bin",
        "PLATFORM_JWT_HS256_SECRET": JWT_SECRET,
        "PLATFORM_APPROVAL_HMAC_SECRET": APPROVAL_SECRET,
        "PLATFORM_NATS_NKEY_SEED_FILE": str(dev.seed_file(service)),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.tools.platformd.main", "config", service],
        env=environment,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout + done.stderr
