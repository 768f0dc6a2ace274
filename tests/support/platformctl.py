"""Run the installed platformctl console script as a user's shell or script would.

stdout and stderr are pipes (not a terminal), and the environment holds none of the
caller's ``PLATFORM_*`` variables: a developer's own ``PLATFORM_TOKEN`` or ``PLATFORM_API``
must not leak into a test. Nor may their contexts and ``login`` tokens: unless a test
passes its own ``PLATFORMCTL_CONFIG``, the config file is one that cannot exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLATFORMCTL = Path(sys.executable).parent / "platformctl"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


# Below a file, so it is never there and can never be created: no contexts, no tokens.
NO_CONFIG = f"{os.devnull}/platformctl/config.yaml"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``PLATFORM_*`` and platformctl's config, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PLATFORM_", "PLATFORMCTL_")) and key != "XDG_CONFIG_HOME"
    }
    env["PLATFORMCTL_CONFIG"] = NO_CONFIG
    env.update(extra)
    return env


def run_platformctl(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> Result:
    """Run platformctl to completion (for tests without an event loop)."""
    done = subprocess.run(
        [str(PLATFORMCTL), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


async def platformctl(*args: str, env: dict[str, str] | None = None, limit_seconds: float = 30) -> Result:
    """Run platformctl without blocking the event loop (the gateway under test may share it)."""
    process = await asyncio.create_subprocess_exec(
        str(PLATFORMCTL),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else clean_env(),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), limit_seconds)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())
