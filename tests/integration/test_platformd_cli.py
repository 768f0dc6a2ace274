"""The platformd launcher as an operator runs it from a shell (no NATS or Postgres needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.platformctl import clean_env

PLATFORMD = Path(sys.executable).parent / "platformd"


def config_lines(service: str) -> dict[str, str]:
    done = subprocess.run(
        [str(PLATFORMD), "config", service],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {line.split()[0]: line for line in done.stdout.splitlines()}


def test_config_piped_into_a_reader_that_stops_early_exits_quietly() -> None:
    """`platformd config gateway | head -3`: the reader is gone before platformd writes."""
    process = subprocess.Popen(
        [str(PLATFORMD), "config", "gateway"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None
    process.stdout.close()  # like `head` having read its lines and exited
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert stderr == b""


def test_config_shows_harmless_defaults_of_secret_settings() -> None:
    lines = config_lines("gateway")
    # A URL without credentials is no secret: operators need to see where it connects.
    assert "nats://127.0.0.1:4222" in lines["PLATFORM_NATS_URL"]
    # No default at all reads as "-", not as a hidden value.
    assert lines["PLATFORM_JWT_HS256_SECRET"].split()[1] == "-"
    assert "(secret)" not in "\n".join(lines.values())


def test_strict_production_refuses_to_start_the_renderer_with_the_default_argocd_project() -> None:
    """Argo CD's `default` project lets an app repository deploy anything anywhere."""
    strict = {
        "PLATFORM_ENV": "prod",
        "PLATFORM_POSTGRES_DSN": "postgresql://postgres@127.0.0.1:5432/postgres",
        "PLATFORM_ARGOCD_GITOPS_REPO_URL": "https://git.example.com/platform/gitops.git",
    }
    done = subprocess.run(
        [str(PLATFORMD), "renderer"],
        capture_output=True,
        text=True,
        env={**clean_env(), **strict, "PLATFORM_ARGOCD_PROJECT": "default"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    [message] = done.stderr.splitlines()
    assert message.startswith("platformd: invalid configuration: PLATFORM_ARGOCD_PROJECT=default ")
    assert "strict production mode" in message
