"""Real git remotes for tests: bare repositories on disk that count the pushes they receive."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    """Run git and return its stdout (stripped); raises on failure with git's stderr."""
    result = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout.decode().strip()


@dataclass(frozen=True)
class BareRemote:
    """A bare repository standing in for the GitOps remote."""

    path: Path
    branch: str = "main"

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def git(self, *args: str) -> str:
        return git(f"--git-dir={self.path}", *args)

    def pushes(self) -> int:
        """Pushes received so far (one line per push, written by the post-receive hook)."""
        log = self.path / "pushes.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def commits(self) -> list[str]:
        """Commit ids on the branch, newest first (empty when the branch does not exist)."""
        if not self.has_branch():
            return []
        return self.git("rev-list", f"refs/heads/{self.branch}").split()

    def has_branch(self) -> bool:
        result = subprocess.run(
            [
                "git",
                f"--git-dir={self.path}",
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{self.branch}",
            ],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def message(self, commit: str) -> str:
        return self.git("log", "-1", "--format=%B", commit)

    def trailers(self, commit: str) -> list[tuple[str, str]]:
        raw = self.git("log", "-1", "--format=%(trailers:only,unfold)", commit)
        pairs = [line.split(": ", 1) for line in raw.splitlines() if line.strip()]
        return [(key, value) for key, value in pairs]

    def files(self, directory: str, ref: str | None = None) -> list[str]:
        """Paths under ``directory`` at ``ref`` (default: the branch head), relative to it."""
        listing = self.git(
            "ls-tree", "-r", "--name-only", ref or f"refs/heads/{self.branch}", "--", directory
        )
        return sorted(line.removeprefix(directory.rstrip("/") + "/") for line in listing.splitlines())

    def show(self, path: str, ref: str | None = None) -> str:
        return self.git("show", f"{ref or f'refs/heads/{self.branch}'}:{path}")


def bare_remote(folder: Path, branch: str = "main") -> BareRemote:
    """An empty bare repository whose post-receive hook logs every push."""
    git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(folder))
    hook = folder / "hooks" / "post-receive"
    hook.write_text(f'#!/bin/sh\ncat >/dev/null\necho push >> "{folder / "pushes.log"}"\n')
    hook.chmod(0o755)
    return BareRemote(folder, branch)


def clone(remote: BareRemote, folder: Path) -> Path:
    """A working clone of ``remote`` with its own identity, for commits made "by someone else"."""
    git("clone", "--quiet", str(remote.path), str(folder))
    git("config", "user.name", "Someone Else", cwd=folder)
    git("config", "user.email", "someone@example.com", cwd=folder)
    return folder


def search_path() -> str:
    """The PATH tests hand to the publisher's git (what the service reads from its settings)."""
    return os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
