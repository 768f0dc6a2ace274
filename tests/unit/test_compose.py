"""compose.yaml against the code: the same seven processes as `make run`, settings they read.

There is no container engine where the tests run, so this checks the file, not a running
stack: each service's command, healthcheck port and start order, and that every variable
it sets is one the service's settings class reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.settings import describe_settings
from services.tools.platformd.registry import SERVICES, own_secrets, platform_secrets, service_entry

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"
NAMES = [name.replace("_", "-") for name in SERVICES]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_nats_runs_jetstream_and_migrations_run_once_first(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "-js" in services["nats"]["command"]
    assert services["migrate"]["command"] == ["platformd", "migrate", "all"]
    assert services["migrate"]["restart"] == "no"
    for name in NAMES:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["nats"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", NAMES)
def test_service_command_healthcheck_and_settings(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["command"] == ["platformd", name]
    environment = service["environment"]
    variable = "PLATFORM_ADDRESS" if name == "gateway" else "PLATFORM_HEALTH_ADDRESS"
    host, _, port = environment[variable].rpartition(":")
    assert host == "0.0.0.0", "the healthcheck and the published port need more than loopback"
    assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"])
    settings_class = service_entry(name).settings_class
    known = {variable for variable, _default, _doc in describe_settings(settings_class)}
    known |= {
        f"{spec.metadata['env']}_FILE"
        for spec in dataclasses.fields(settings_class)
        if spec.metadata.get("secret")
    }
    assert set(environment) - known == set(), f"{name} does not read these"


@pytest.mark.parametrize("name", NAMES)
def test_each_service_gets_only_its_own_secrets(compose: dict[str, Any], name: str) -> None:
    environment = set(compose["services"][name]["environment"])
    every_secret = platform_secrets()
    given = {variable.removesuffix("_FILE") for variable in environment} & every_secret
    assert given <= own_secrets(name), f"{name} is given secrets its settings do not declare"
    if name == "gateway":
        assert "PLATFORM_APPROVAL_HMAC_SECRET" not in given
        assert "PLATFORM_POSTGRES_DSN" not in given
