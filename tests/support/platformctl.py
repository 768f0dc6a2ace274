"""Run the installed platformctl console script as a user's shell or script would.

stdout and stderr are pipes (not a terminal), and the environment holds none of the
caller's ``PLATFORM_*`` variables: a developer's own ``PLATFORM_TOKEN`` or ``PLATFORM_API``
must not leak into a test. Nor may their contexts and ``login`` tokens: unless a test
passes its own ``PLATFORMCTL_CONFIG``, the config file is one that cannot exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
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


async def platformctl(
    *args: str, env: dict[str, str] | None = None, limit_seconds: float = 30, stdin: str | bytes | None = None
) -> Result:
    """Run platformctl without blocking the event loop (the gateway under test may share it);
    ``stdin``: what it reads there (else it reads nothing: stdin is closed)."""
    process = await asyncio.create_subprocess_exec(
        str(PLATFORMCTL),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else clean_env(),
    )
    sent = stdin.encode() if isinstance(stdin, str) else stdin
    stdout, stderr = await asyncio.wait_for(process.communicate(sent), limit_seconds)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


@dataclass
class Running:
    """A platformctl process still running: a test reads what it prints and acts on it (opens
    the sign-in URL it shows, say) before it ends."""

    process: asyncio.subprocess.Process
    stderr_lines: list[str]

    async def stderr_line(self, containing: str, limit_seconds: float = 15) -> str:
        """The next stderr line containing ``containing`` (the lines before it are kept)."""
        assert self.process.stderr is not None
        while True:
            raw = await asyncio.wait_for(self.process.stderr.readline(), limit_seconds)
            if not raw:
                raise AssertionError(
                    f"platformctl ended without printing {containing!r}: {self.stderr_lines}"
                )
            line = raw.decode()
            self.stderr_lines.append(line)
            if containing in line:
                return line.rstrip("\n")

    async def finish(self, limit_seconds: float = 30) -> Result:
        stdout, stderr = await asyncio.wait_for(self.process.communicate(), limit_seconds)
        assert self.process.returncode is not None
        return Result(self.process.returncode, stdout.decode(), "".join(self.stderr_lines) + stderr.decode())


@contextlib.asynccontextmanager
async def started_platformctl(*args: str, env: dict[str, str]) -> AsyncIterator[Running]:
    """Start platformctl; it is killed if the block leaves before it has finished."""
    process = await asyncio.create_subprocess_exec(
        str(PLATFORMCTL), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        yield Running(process, [])
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def scripted_browser(directory: Path) -> Path:
    """An executable to pass as ``BROWSER``: it opens the URL it is given and follows the
    redirects, as a browser whose user is already signed in at the provider would (the
    provider's authorize endpoint redirects straight back to platformctl's loopback)."""
    script = directory / "scripted-browser"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n\nimport httpx\n\n"
        "answer = httpx.get(sys.argv[1], follow_redirects=True, timeout=10)\n"
        "sys.exit(0 if answer.status_code == 200 else 1)\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script
