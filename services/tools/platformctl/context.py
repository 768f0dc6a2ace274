"""What every platformctl command receives (a :class:`Context`) and returns (an exit code).

Its own module so that every command module can depend on it without depending on another.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from services.tools.platformctl.client import ApiClient
from services.tools.platformctl.config_file import CliConfig
from services.tools.platformctl.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE

# Re-exported: every command module returns these.
__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_TIMEOUT", "EXIT_USAGE", "Command", "Context"]


@dataclass
class Context:
    api: ApiClient
    output: str
    stdout: TextIO
    stderr: TextIO
    secret: str | None
    approval_secret: str | None = None
    config: CliConfig | None = None
    # The context in use (--context, else the current one), if any.
    context_name: str | None = None

    def note(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()


Command = Callable[[argparse.Namespace, Context], int]
