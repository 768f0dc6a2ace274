"""The launcher's pid ledger recognises its processes by pid and start time."""

from __future__ import annotations

import subprocess
import sys

from services.tools.platformd.dev_stack import StartedProcess, _identity, _is_still


def test_a_process_recorded_before_its_exec_is_still_recognised() -> None:
    """The ledger is written right after the fork: the child may still show the launcher's
    command line then. It must count as running afterwards, or a killed launcher's successor
    would leave it running (and a check of the ledger would call a live process dead)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = _identity(child.pid)
        assert identity is not None
        recorded = StartedProcess("service", child.pid, identity[0], ["the", "launcher's", "argv"])
        assert _is_still(recorded)
        assert not _is_still(StartedProcess("service", child.pid, identity[0] + 1, identity[1]))
    finally:
        child.kill()
        child.wait()
    assert not _is_still(recorded)
