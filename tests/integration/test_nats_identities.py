"""``platformd nats-config --format server`` as nats-server reads it: the users' keys from
``PLATFORM_NKEY_<IDENTITY>`` variables (as the Helm chart's pods get them from a Secret), the
platform's identities admitted, anyone else refused; and what the server enforces for the
stream: only the provisioner (``platformd migrate``) may change it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import BadRequestError

from libs.bus import identity_options, stream_config
from libs.embedded import EmbeddedNats
from libs.settings import BusSettings, load_settings
from services.tools.nats_permissions import PROVISIONER, public_key_variable, server_authorization
from services.tools.platformd.nats_identities import BusIdentities, ensure_identities, public_key

REPOSITORY = Path(__file__).resolve().parents[2]
STREAM = "PLATFORM_EVENTS"


async def test_the_server_format_admits_the_identities_whose_keys_the_environment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(BusSettings, {})
    seeds = ensure_identities(tmp_path / "seeds", settings).seed_files
    for name, path in seeds.items():
        monkeypatch.setenv(public_key_variable(name), public_key(path.read_text().strip()))
    assert oct(seeds["subscriber"].stat().st_mode & 0o777) == "0o600"
    server = EmbeddedNats(tmp_path / "nats", authorization=server_authorization(settings))
    server.start()
    try:
        subscriber = await nats.connect(
            server.url, nkeys_seed=str(seeds["subscriber"]), allow_reconnect=False
        )
        info = await subscriber.jetstream(timeout=2).account_info()
        await subscriber.close()
        assert info.streams == 0
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(server.url, allow_reconnect=False)
    finally:
        server.stop()


class SecuredNats:
    """An embedded NATS admitting the platform's identities, and connections as any of them."""

    def __init__(self, server: EmbeddedNats, identities: BusIdentities) -> None:
        self.server, self.identities = server, identities
        self.refusals: list[str] = []

    def environment(self, identity: str, **more: str) -> dict[str, str]:
        return {"PLATFORM_NATS_URL": self.server.url, **self.identities.environment(identity), **more}

    async def connect(self, identity: str) -> NatsClient:
        async def refused(error: Exception) -> None:
            self.refusals.append(str(error).lower())

        settings = load_settings(BusSettings, self.environment(identity))
        return await nats.connect(
            self.server.url, **identity_options(settings), error_cb=refused, allow_reconnect=False
        )

    def migrate(self, **settings: str) -> subprocess.CompletedProcess[str]:
        """``platformd migrate gateway``: no schema, so only the stream's configuration."""
        return subprocess.run(
            [sys.executable, "-m", "services.tools.platformd.main", "migrate", "gateway"],
            env={"PATH": "/usr/bin:/bin", **self.environment(PROVISIONER, **settings)},
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredNats]:
    identities = ensure_identities(tmp_path / "seeds", load_settings(BusSettings, {}))
    server = EmbeddedNats(tmp_path / "nats", authorization=identities.authorization)
    server.start()
    try:
        yield SecuredNats(server, identities)
    finally:
        server.stop()


async def test_migrate_configures_a_fresh_stream_as_the_provisioner_and_no_service_can_change_it(
    secured: SecuredNats,
) -> None:
    created = secured.migrate()
    assert created.returncode == 0, created.stderr
    assert f"stream {STREAM}: configuration applied" in created.stderr
    changed = secured.migrate(PLATFORM_EVENTS_MAX_AGE_DAYS="2")
    assert changed.returncode == 0, changed.stderr

    intake = await secured.connect("intake")
    js = intake.jetstream(timeout=1)
    try:
        before = (await js.stream_info(STREAM)).config
        assert before.max_age == 2 * 24 * 3600
        capture = dataclasses.replace(
            stream_config(load_settings(BusSettings, {})),
            subjects=["platform.events.>", "platform.rpc.>", "_INBOX_gateway.>"],
            max_msgs=1,
        )
        with pytest.raises(nats.errors.TimeoutError):  # the server drops the request
            await js.update_stream(capture)
        # A create of the existing stream cannot change it: the server refuses the difference.
        with pytest.raises(BadRequestError, match="different configuration"):
            await js.add_stream(capture)
        await intake.flush()
        after = (await js.stream_info(STREAM)).config
    finally:
        await intake.close()
    assert any(
        "permissions violation" in refusal and f"$js.api.stream.update.{STREAM.lower()}" in refusal
        for refusal in secured.refusals
    ), secured.refusals
    assert (after.subjects, after.max_msgs, after.max_age) == (
        ["platform.events.>"],
        before.max_msgs,
        before.max_age,
    )


async def test_a_service_creates_the_stream_when_it_is_missing(secured: SecuredNats) -> None:
    policy = await secured.connect("policy")
    js = policy.jetstream(timeout=2)
    try:
        info = await js.add_stream(stream_config(load_settings(BusSettings, {})))
    finally:
        await policy.close()
    assert info.config.name == STREAM
    assert secured.refusals == []


def test_a_seed_file_left_empty_is_replaced_with_a_new_seed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A crash between creating a seed file and writing it must not block the next start."""
    folder = tmp_path / "state" / "nats"
    settings = load_settings(BusSettings, {})
    kept = ensure_identities(folder, settings).seed_files
    operator_seed = kept["operator"].read_text()
    kept["subscriber"].write_text("")
    kept["intake"].write_text("not a seed\n")

    again = ensure_identities(folder, settings)
    for name in ("subscriber", "intake"):
        seed = again.seed_files[name].read_text().strip()
        assert public_key(seed).startswith("U"), name
        assert oct(again.seed_files[name].stat().st_mode & 0o777) == "0o600"
        assert f"{again.seed_files[name]} holds no NKEY seed" in caplog.text
    assert again.seed_files["operator"].read_text() == operator_seed  # the good ones are kept
    assert public_key(again.seed_files["subscriber"].read_text().strip()) in again.authorization
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert sorted(path.name for path in folder.iterdir() if path.suffix != ".nk") == []
