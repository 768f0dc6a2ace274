"""The shell blocks of README.md and docs/*.md, and a runner that types them the way a reader does.

A block is a fenced ```` ```sh ```` or ```` ```bash ```` block. The line just before its fence
may say ``<!-- docs-test: skip (reason) -->``: the block is not run and the reason is
reported. Blocks fenced ``text``, ``console``, ``json``, ``yaml`` or without a language are
illustrations and never run.

Sections: the blocks under one ``#`` or ``##`` heading (their ``###`` subsections included)
share one shell, in order, as if typed into one terminal; each section starts a fresh
shell. The runner carries a section's shell state (variables, exported or not, functions,
the working directory) from one block to the next, so every block is its own test case
and nothing is run twice.

Expectations a block may state in comments, checked in order against its output
(stdout and stderr together):

- ``# -> TEXT``: TEXT appears in the output;
- a comment that starts with a quoted string, ``... | jq .status   # "approved"``: the
  text between the quotes appears in the output.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

RUNNABLE_LANGUAGES = frozenset({"sh", "bash"})
MARKER = re.compile(r"<!--\s*docs-test:")
SKIP_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>[^)].*)\)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
ARROW_EXPECTATION = re.compile(r"#\s*->\s*(?P<text>.+?)\s*$")
# Only a trailing comment: a comment line of its own is an illustration, not a promise.
QUOTED_EXPECTATION = re.compile(r"\S\s+#\s+\"(?P<text>[^\"]+)\"")
# The gateway's error body ({"error": ..., "code": ..., "details": ...}); curl -s exits 0 on
# an HTTP error, so a block that printed one did not do what its text says.
API_ERROR_BODY = re.compile(
    r'"code"\s*:\s*"(?:validation|unauthorized|forbidden|not_found|method_not_allowed|timeout'
    r'|conflict|unavailable|internal)"'
)


class DocFormatError(ValueError):
    """A docs-test marker or a fence the extractor cannot read; the message names file:line."""


@dataclass(frozen=True)
class DocBlock:
    path: str  # relative to the repository, e.g. "docs/api.md"
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    section: str  # the `#`/`##` heading above the block
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in RUNNABLE_LANGUAGES

    @property
    def runs(self) -> bool:
        return self.is_shell and self.skip_reason is None

    @property
    def section_key(self) -> tuple[str, str]:
        return (self.path, self.section)

    def expectations(self) -> list[str]:
        """What the block's comments say its output contains, in order."""
        found = []
        for line in self.text.splitlines():
            arrow = ARROW_EXPECTATION.search(line)
            quoted = QUOTED_EXPECTATION.search(line)
            if arrow:
                found.append(arrow["text"])
            elif quoted:
                found.append(quoted["text"])
        return found


def extract_blocks(path: Path, relative_to: Path) -> list[DocBlock]:
    """Every fenced block of one Markdown file, with its section and skip marker."""
    name = path.relative_to(relative_to).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[DocBlock] = []
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        heading = HEADING.match(line)
        if heading and len(heading["level"]) <= 2:
            section = heading["title"]
        opening = FENCE.match(line)
        if MARKER.search(line):
            _check_marker(lines, index, name)
        if not opening:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower() if opening["info"].strip() else ""
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not _closes(lines[end], fence):
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        if end == len(lines):
            raise DocFormatError(f"{name}:{index + 1}: fence never closed")
        skip = SKIP_MARKER.match(lines[index - 1]) if index > 0 else None
        blocks.append(
            DocBlock(
                path=name,
                line=index + 1,
                language=language,
                text="\n".join(body) + "\n",
                section=section,
                skip_reason=skip["reason"].strip() if skip else None,
            )
        )
        index = end + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}


def _check_marker(lines: list[str], index: int, name: str) -> None:
    where = f"{name}:{index + 1}"
    if not SKIP_MARKER.match(lines[index]):
        raise DocFormatError(f"{where}: a docs-test marker must read <!-- docs-test: skip (reason) -->")
    following = lines[index + 1] if index + 1 < len(lines) else ""
    opening = FENCE.match(following)
    if not opening or opening["info"].strip().split(" ")[0].lower() not in RUNNABLE_LANGUAGES:
        raise DocFormatError(f"{where}: a skip marker must be on the line just before a ```sh/```bash fence")


def documentation_files(repository: Path) -> list[Path]:
    """README.md, then docs/*.md in name order: the order a reader and the test go through them."""
    return [repository / "README.md", *sorted((repository / "docs").glob("*.md"))]


def all_blocks(repository: Path) -> list[DocBlock]:
    return [block for path in documentation_files(repository) for block in extract_blocks(path, repository)]


def previous_in_section(blocks: Iterable[DocBlock], block: DocBlock) -> DocBlock | None:
    """The runnable block before ``block`` in its section, whose shell state it continues."""
    previous = None
    for candidate in blocks:
        if candidate == block:
            return previous
        if candidate.runs and candidate.section_key == block.section_key:
            previous = candidate
    raise ValueError(f"{block.id} is not among the blocks")


# Bash's own variables: never carried from one block to the next.
_SHELL_VARIABLES = (
    "__docs_*|BASH*|PWD|OLDPWD|SHLVL|_|PIPESTATUS|FUNCNAME|LINENO|RANDOM|SRANDOM|SECONDS|EPOCH*"
    "|HISTCMD|COMP_*|GROUPS|DIRSTACK|PPID|UID|EUID|SHELLOPTS|OPTIND|OPTARG|OPTERR|IFS|PS4"
)

_PROLOGUE = """\
__docs_baseline=" $(compgen -v | tr '\\n' ' ') "
__docs_dump() {
  local __docs_n __docs_exported
  __docs_exported=" $(compgen -e | tr '\n' ' ') "
  for __docs_n in $( { compgen -e; compgen -v; } | sort -u ); do
    case "$__docs_n" in %(shell_variables)s) continue ;; esac
    # A variable bash had before the block ran is carried only if it is exported (PATH).
    if [[ "$__docs_baseline" == *" $__docs_n "* && "$__docs_exported" != *" $__docs_n "* ]]; then
      continue
    fi
    declare -p "$__docs_n" 2>/dev/null | grep -v '^declare -[a-zA-Z]*r' || true
  done
  for __docs_n in $(compgen -A function); do
    [[ "$__docs_n" == __docs_* ]] || declare -f "$__docs_n"
  done
  printf 'cd %%q\\n' "$PWD"
}
"""


@dataclass(frozen=True)
class BlockRun:
    block: DocBlock
    code: int
    output: str
    seconds: float
    state: Path | None  # the shell state after the block; None when it failed

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass
class BlockRunner:
    """Runs blocks in ``bash -euo pipefail`` with ``workdir`` as the working directory and
    exactly ``environment`` as the environment."""

    workdir: Path
    environment: Mapping[str, str]
    scratch: Path
    timeout: float = 60.0

    def run(self, block: DocBlock, state_in: Path | None) -> BlockRun:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", block.id)
        script = self.scratch / f"{slug}.sh"
        state_out = self.scratch / f"{slug}.state"
        restore = f". {_quote(state_in)}\n" if state_in is not None else ""
        script.write_text(
            _PROLOGUE % {"shell_variables": _SHELL_VARIABLES}
            + restore
            + "# ---- the block ----\n"
            + block.text
            + "# ---- end of the block ----\n"
            + f"__docs_dump > {_quote(state_out)}\n"
        )
        started = time.monotonic()
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                ["bash", "-euo", "pipefail", str(script)],
                cwd=self.workdir,
                env=dict(self.environment),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own process group, so a timeout stops curl/platformctl children too.
                start_new_session=True,
            )
            try:
                code = process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = -1
            output.seek(0)
            text = output.read().decode(errors="replace")
        if code == -1:
            text += f"\n[docs test: stopped after {self.timeout:.0f}s]"
        ok = code == 0 and state_out.exists()
        return BlockRun(block, code, text, time.monotonic() - started, state_out if ok else None)


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def unmet_expectations(block: DocBlock, output: str) -> list[str]:
    """The block's expectations the output does not meet, in order."""
    missing = []
    position = 0
    for expected in block.expectations():
        found = output.find(expected, position)
        if found < 0:
            missing.append(expected)
        else:
            position = found + len(expected)
    return missing


def api_error_in(block: DocBlock, output: str) -> str | None:
    """The first API error body in the output, unless the block says it expects one."""
    if any('"code"' in expected for expected in block.expectations()):
        return None
    match = API_ERROR_BODY.search(output)
    if match is None:
        return None
    start = output.rfind("\n", 0, match.start()) + 1
    end = output.find("\n", match.end())
    return output[start : end if end >= 0 else len(output)]
