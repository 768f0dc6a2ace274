"""``platformd nats-config --format server`` as nats-server reads it: the users' keys from
``PLATFORM_NKEY_<IDENTITY>`` variables (as the Helm chart's pods get them from a Secret), the
platform's identities admitted, anyone else refused."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from libs.embedded import EmbeddedNats
from libs.settings import BusSettings, load_settings
from services.tools.nats_permissions import public_key_variable, server_authorization
from services.tools.platformd.nats_identities import ensure_identities, public_key


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
