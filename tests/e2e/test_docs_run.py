"""Every ```sh / ```bash block of README.md and docs/*.md runs, as a new user would run it,
against ``platformd dev`` (what ``make run`` starts).

How the blocks run:

- One ``platformd dev`` for the module, with its own state directory and API port (and,
  when ``PLATFORM_TEST_POSTGRES_DSN`` / ``PLATFORM_TEST_NATS_URL`` are set, a fresh
  database and a private stream on those servers instead of embedded ones). Its
  development secrets are the defaults the docs use.
- One test case per block, id ``file:line`` of its opening fence, in document order
  (README.md, then docs/*.md by name).
- Sections: the blocks under one ``#``/``##`` heading, ``###`` subsections included, share
  one shell in order, as if typed into one terminal; every section starts from a fresh
  shell. A block continues the shell state (variables, functions, working directory) the
  previous block of its section left; that block is run first if it has not run yet
  (``-k`` selects single blocks), and when it failed the block fails without running.
- Each block runs in ``bash -euo pipefail`` with a timeout, its working directory a
  stand-in for the top of a checkout (``.venv``, ``examples`` and ``state`` link to the
  real ones and to the stack's state directory), and an environment holding only
  ``PATH`` (without the virtualenv), ``HOME`` (an empty directory) and ``PLATFORM_API``:
  everything else a block needs it has to set itself, as the docs tell users to.
- A block passes when it exits 0, prints no API error body (``curl -s`` exits 0 on one),
  and its output shows, in order, what its ``# -> text`` and ``# "text"`` comments say.
- ``<!-- docs-test: skip (reason) -->`` on the line before a fence: reported as a skip
  with that reason. ```text / ```console blocks are output or illustrations, not collected.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.doc_blocks import (
    BlockRun,
    BlockRunner,
    DocBlock,
    all_blocks,
    api_error_in,
    documentation_files,
    previous_in_section,
    unmet_expectations,
)
from tests.support.platformd_dev import DevStack, platformd_dev

REPOSITORY = Path(__file__).resolve().parents[2]
BLOCKS = all_blocks(REPOSITORY)
SHELL_BLOCKS = [block for block in BLOCKS if block.is_shell]
# The runner must not quietly run nothing: the docs have at least this many runnable blocks.
MIN_RUNNABLE_BLOCKS = 20
BLOCK_TIMEOUT_SECONDS = 60.0
CITATIONS = re.compile(r"DESIGN|\bSPEC\b|SPEC\.md|NOTES|STYLE")


@dataclass
class Session:
    runner: BlockRunner
    runs: dict[str, BlockRun] = field(default_factory=dict)

    def run(self, block: DocBlock) -> BlockRun:
        """``block`` after the blocks of its section before it, each once."""
        if block.id in self.runs:
            return self.runs[block.id]
        previous = previous_in_section(SHELL_BLOCKS, block)
        state = None
        if previous is not None:
            before = self.run(previous)
            if not before.ok:
                pytest.fail(f"not run: {previous.id}, earlier in its section, failed", pytrace=False)
            state = before.state
        result = self.runner.run(block, state)
        self.runs[block.id] = result
        return result


def _user_path() -> str:
    """The PATH of a shell that has not activated the virtualenv."""
    venv_bin = str(Path(sys.executable).parent)
    default = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    entries = [entry for entry in os.environ.get("PATH", default).split(os.pathsep) if entry != venv_bin]
    return os.pathsep.join(entries)


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    # Every page's blocks run one after another against this one stack, within minutes, so
    # team payments ends up with far more live previews, made far faster, than a reader of
    # any one page makes: its default budget and the callers' creates a minute are raised so
    # the later pages are not refused for what the earlier ones did.
    limits = {
        "PLATFORM_DEFAULT_TEAM_BUDGET_USD": "1000000",
        "PLATFORM_RATE_LIMIT_SUBJECT_GENERATIONS_PER_MINUTE": "0",
    }
    with platformd_dev(tmp_path_factory.mktemp("docs-stack"), environment=limits) as running:
        yield running


@pytest.fixture(scope="module")
def session(dev_stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Session:
    checkout = tmp_path_factory.mktemp("checkout")
    venv = REPOSITORY / ".venv" if (REPOSITORY / ".venv").is_dir() else Path(sys.prefix)
    (checkout / ".venv").symlink_to(venv)
    (checkout / "examples").symlink_to(REPOSITORY / "examples")
    (checkout / "state").symlink_to(dev_stack.state_dir)
    home = tmp_path_factory.mktemp("home")
    environment = {"PATH": _user_path(), "HOME": str(home), "PLATFORM_API": dev_stack.api_url}
    runner = BlockRunner(checkout, environment, tmp_path_factory.mktemp("blocks"), BLOCK_TIMEOUT_SECONDS)
    return Session(runner)


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[block.id for block in SHELL_BLOCKS])
def test_doc_block(block: DocBlock, session: Session) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"{block.id}: {block.skip_reason}")
    result = session.run(block)
    shown = f"--- {block.id} ({block.section}), exit {result.code}, {result.seconds:.1f}s\n{result.output}"
    assert result.code == 0, shown
    assert result.state is not None, f"{block.id} left no shell state\n{shown}"
    error = api_error_in(block, result.output)
    assert error is None, f"{block.id} printed an API error: {error}\n{shown}"
    missing = unmet_expectations(block, result.output)
    assert not missing, f"{block.id}: output lacks {missing} (in this order)\n{shown}"


def test_enough_blocks_ran(request: pytest.FixtureRequest, session: Session) -> None:
    """The blocks did run: none quietly dropped by the extractor or the runner."""
    runnable = [block for block in SHELL_BLOCKS if block.runs]
    assert len(runnable) >= MIN_RUNNABLE_BLOCKS, [block.id for block in runnable]
    selected = {
        item.callspec.id
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_doc_block"
    }
    if selected != {block.id for block in SHELL_BLOCKS}:
        pytest.skip("only some blocks were selected")
    not_run = sorted({block.id for block in runnable} - set(session.runs))
    assert not not_run, f"never ran: {not_run}"
    assert len(session.runs) >= MIN_RUNNABLE_BLOCKS


def test_docs_cite_no_developer_notes() -> None:
    """The README and docs/ stand alone: no reference to the developers' design notes."""
    citations = [
        f"{path.relative_to(REPOSITORY)}:{number}: {line.strip()}"
        for path in documentation_files(REPOSITORY)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if CITATIONS.search(line)
    ]
    assert not citations, "\n".join(citations)
