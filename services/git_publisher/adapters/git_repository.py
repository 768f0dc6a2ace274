"""The service's own bare GitOps repository, driven by ``git`` subprocesses.

Bare on purpose: there is no working tree to share, check out or clean, so nothing a
crashed or concurrent writer leaves behind can leak into the next commit. Commits are built
with ``git fast-import`` on top of an explicit base commit, which costs the same whatever the
repository's size (GitPython's index is linear in it).

Every git call goes through :meth:`GitRepository.run`: asynchronous, bounded by a timeout,
with a minimal environment (identity, no terminal prompts, C locale so errors parse the
same everywhere) and credentials only as an HTTP header in environment config, never in
URLs or arguments. git's own output can quote the remote URL, so it is sanitised before it
is logged and never copied into errors that reach events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import Histogram

from libs.errors import Unavailable
from libs.telemetry import REGISTRY
from services.git_publisher.domain.changes import Change

log = logging.getLogger(__name__)

GIT_SECONDS = Histogram(
    "platform_git_seconds",
    "Duration of git commands run by the git-publisher, by operation and outcome.",
    ["operation", "outcome"],
    registry=REGISTRY,
)

ZERO_OID = "0" * 40
# Where fast-import leaves each batch's commits before they are pushed or fast-forwarded.
# Reset for every batch, so a batch that failed half-way never becomes the next one's parent.
BATCH_REF = "refs/platform/publisher-batch"
# Loose objects and small packs pile up with every batch; let git decide when to repack.
GC_EVERY_BATCHES = 50

_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")
_SCP_LIKE = re.compile(r"[\w.+-]+@[\w.-]+:[^\s'\"]*")
# The branch moved since the fetch: refused by our own side's fast-forward check ...
_BRANCH_MOVED = ("[rejected]", "non-fast-forward", "fetch first", "stale info")
# ... or, on a remote whose receive takes a moment (any hosted remote's checks), lost on its
# side: another push updated the ref between this push's start and its ref update. git says
# "[remote rejected] (failed to update ref)" then, with "cannot lock ref ... but expected"
# or "incorrect old value provided"; a race, not a refusal, and a rebuild fixes it.
_REMOTE_RACE = ("failed to update ref", "cannot lock ref", "but expected", "incorrect old value provided")
# The remote could not store the pack (its disk, its unpacker): nothing about the commit.
_REMOTE_TROUBLE = ("unpacker error", "unpack failed")


def sanitised(text: str, secrets: Sequence[str] = ()) -> str:
    """git output with anything URL-like, and the given secrets, replaced: safe for logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    text = _URL_LIKE.sub("<url>", text)
    text = _SCP_LIKE.sub("<remote>", text)
    return text.strip()[-2000:]


class GitError(Unavailable):
    """A git command failed. ``message`` is safe for events; ``detail`` (sanitised) is for logs.

    ``transient`` (see :func:`libs.errors.is_transient`) is True unless retrying cannot
    help: the remote could not be reached (fetch or push transport failures, timeouts) or a
    local git call failed (a full disk, a lock file a killed git left behind), and the
    consumer keeps retrying instead of failing the request after a few quick attempts. Only
    a remote refusing the commit (:class:`PushRejected` with ``transient=False``) fails fast.
    """

    def __init__(self, message: str, detail: str = "", *, transient: bool = True) -> None:
        super().__init__(message)
        self.detail = detail
        self.transient = transient


class PushRejected(GitError):
    """The remote branch moved since the fetch, or another push won the race for the ref on
    the remote's side (transient: fetch and rebuild), or the remote's own checks refused the
    commit (a ``pre-receive`` hook, secret scanning, a file-size limit: ``[remote rejected]``
    for any other reason; not transient, the same commit meets the same refusal)."""


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


class GitRepository:
    """A bare repository at ``path`` mirroring ``branch`` of an optional remote ``origin``.

    ``lock`` serialises every mutation sequence in this process (fetch → import → push →
    update refs); a second process needs its own ``path``.
    """

    def __init__(
        self,
        path: Path,
        *,
        branch: str,
        identity: Identity,
        remote_url: str | None = None,
        push_enabled: bool = False,
        token: str | None = None,
        timeout_seconds: float = 60.0,
        search_path: str = "/usr/local/bin:/usr/bin:/bin",
        home: str | None = None,
    ) -> None:
        self.path = path.resolve()
        self.branch = branch
        self.identity = identity
        self.remote_url = remote_url
        self.push_enabled = push_enabled and remote_url is not None
        self.timeout_seconds = timeout_seconds
        self.lock = asyncio.Lock()
        self._secrets = [s for s in (token, remote_url) if s]
        self._batches = 0
        self._last_remote_error: str | None = None
        git = shutil.which("git", path=search_path)
        if git is None:
            raise GitError("git is not installed")
        self._git = git
        self._env = self._environment(token, search_path, home)

    @property
    def branch_ref(self) -> str:
        return f"refs/heads/{self.branch}"

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _environment(self, token: str | None, search_path: str, home: str | None) -> dict[str, str]:
        # Minimal on purpose: git sees a search path (to find ssh and its helpers) and a home
        # (ssh keys, known_hosts), nothing of the service's environment, which holds DSNs and secrets.
        env = {"PATH": search_path}
        if home:
            env["HOME"] = home
        env.update(
            {
                "LC_ALL": "C",
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_AUTHOR_NAME": self.identity.name,
                "GIT_AUTHOR_EMAIL": self.identity.email,
                "GIT_COMMITTER_NAME": self.identity.name,
                "GIT_COMMITTER_EMAIL": self.identity.email,
            }
        )
        if token and self.remote_url and self.remote_url.lower().startswith(("https://", "http://")):
            # Config through the environment (git >= 2.31): the token never lands in the
            # repository's config file, the process arguments or the URL.
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
                }
            )
            self._secrets.append(basic)
        return env

    async def run(
        self, *args: str, stdin: bytes | None = None, operation: str | None = None, check: bool = True
    ) -> GitResult:
        """Run ``git --git-dir=<repo> <args>``; raises :class:`GitError` on failure when ``check``."""
        name = operation or args[0]
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            self._git,
            f"--git-dir={self.path}",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), self.timeout_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            GIT_SECONDS.labels(name, "timeout").observe(time.perf_counter() - started)
            raise GitError(f"git {name} timed out", transient=True) from None
        except asyncio.CancelledError:
            # A cancelled handler must not leave a git process holding the repository's locks.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        result = GitResult(process.returncode or 0, stdout, stderr)
        GIT_SECONDS.labels(name, "ok" if result.returncode == 0 else "error").observe(
            time.perf_counter() - started
        )
        if check and result.returncode != 0:
            raise self._failure(name, result)
        return result

    def _failure(self, operation: str, result: GitResult, *, transient: bool = True) -> GitError:
        detail = sanitised((result.stderr + b"\n" + result.stdout).decode(errors="replace"), self._secrets)
        log.warning("git command failed", extra={"fields": {"operation": operation, "detail": detail}})
        return GitError(f"git {operation} failed", detail, transient=transient)

    # -- set-up -------------------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Create the bare repository if missing and point ``origin`` at the remote URL."""
        if not (self.path / "HEAD").exists():
            self.path.mkdir(parents=True, exist_ok=True)
            await self.run("init", "--quiet", "--bare", f"--initial-branch={self.branch}")
        if self.remote_url:
            # Only the URL is configured (no default refspec): fetches name their refspec.
            await self.run("config", "remote.origin.url", self.remote_url)

    @property
    def remote_failing(self) -> bool:
        return self._last_remote_error is not None

    async def check_remote(self) -> None:
        """The remote as a reported dependency, without side effects: raises while the last
        fetch or push failed (with git's safe summary, e.g. "git fetch failed"), until one
        succeeds again (the publisher re-fetches in the background meanwhile)."""
        if not (self.path / "HEAD").exists():
            raise GitError("the local clone of the gitops repository is missing")
        if self._last_remote_error is not None:
            raise GitError(self._last_remote_error)

    # -- reading ------------------------------------------------------------------------------------

    async def resolve(self, ref: str) -> str | None:
        """The commit ``ref`` points at, or None if it does not exist."""
        result = await self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if result.returncode != 0:
            return None
        return result.stdout.decode().strip() or None

    async def fetch(self) -> str | None:
        """Fetch the remote branch; its head commit, or None when the remote has no such branch yet."""
        result = await self.run(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin",
            f"+{self.branch_ref}:{self.tracking_ref}",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            if b"couldn't find remote ref" in result.stderr:
                # An empty remote (or one without this branch): the first commit is a root commit.
                await self.run("update-ref", "-d", self.tracking_ref)
                self._last_remote_error = None
                return None
            self._last_remote_error = "git fetch failed"
            raise self._failure("fetch", result, transient=True)
        self._last_remote_error = None
        return await self.resolve(self.tracking_ref)

    async def trees_at(self, base: str | None, paths: Sequence[str]) -> dict[str, str | None]:
        """Tree id of each directory ``path`` in ``base`` (None where absent), in one git call."""
        if base is None or not paths:
            return dict.fromkeys(paths)
        unique = list(dict.fromkeys(paths))
        query = "".join(f"{base}:{path}\n" for path in unique).encode()
        result = await self.run("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin=query)
        trees: dict[str, str | None] = {}
        for path, line in zip(unique, result.stdout.decode().splitlines(), strict=True):
            oid, _, kind = line.partition(" ")
            # "<name> missing" for absent paths; a blob where a directory belongs counts as absent.
            trees[path] = oid if kind == "tree" else None
        return trees

    async def blobs_at(self, base: str | None, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Content of each file ``path`` in ``base`` (None where absent), in one git call.

        Meant for small files (generation markers): each is read whole into memory.
        """
        if base is None or not paths:
            return dict.fromkeys(paths)
        unique = list(dict.fromkeys(paths))
        query = "".join(f"{base}:{path}\n" for path in unique).encode()
        output = (await self.run("cat-file", "--batch", stdin=query)).stdout
        blobs: dict[str, bytes | None] = {}
        position = 0
        for path in unique:
            # Each answer is "<oid> <type> <size>\n<content>\n", or "<query> missing\n".
            end = output.index(b"\n", position)
            header = output[position:end].split(b" ")
            position = end + 1
            if len(header) != 3:
                blobs[path] = None
                continue
            size = int(header[2])
            content = output[position : position + size]
            position += size + 1
            # A directory where the file belongs counts as absent, as in trees_at.
            blobs[path] = content if header[1] == b"blob" else None
        return blobs

    async def last_commit_touching(self, base: str | None, path: str) -> str | None:
        """The newest commit in ``base``'s history that changed ``path`` (None if none did)."""
        if base is None:
            return None
        result = await self.run("log", "-1", "--format=%H", base, "--", path)
        return result.stdout.decode().strip() or None

    # -- writing ------------------------------------------------------------------------------------

    async def import_commits(self, base: str | None, changes: Sequence[Change]) -> list[str]:
        """Create one commit per change, chained on ``base``; returns their ids in order.

        Nothing outside :data:`BATCH_REF` moves: the caller pushes or fast-forwards the tip.
        """
        stream = fast_import_stream(base, changes, self.identity, int(time.time()))
        with tempfile.TemporaryDirectory(prefix="git-publisher-") as scratch:
            marks = Path(scratch) / "marks"
            await self.run(
                "fast-import", "--quiet", "--done", "--force", f"--export-marks={marks}",
                stdin=stream, operation="fast-import",
            )  # fmt: skip
            by_mark = dict(line.split(" ", 1) for line in marks.read_text().splitlines() if line)
        self._batches += 1
        return [by_mark[f":{index}"].strip() for index in range(1, len(changes) + 1)]

    async def push(self, commit: str, base: str | None) -> None:
        """Push ``commit`` to the remote branch if the branch still points at ``base`` (None:
        if it does not exist yet); :class:`PushRejected` if not.

        The remote compares and sets the branch in one step (``--force-with-lease`` with the
        expected commit), so a branch another writer moved on, or reset to an older commit,
        since ``base`` was read is a rejection, never an overwrite or a fast-forward that
        brings back what the reset removed. ``commit`` descends from ``base``.
        """
        lease = f"--force-with-lease={self.branch_ref}:{base or ''}"
        result = await self.run(
            "push", "--porcelain", "--quiet", lease, "origin", f"{commit}:{self.branch_ref}", check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            detail = sanitised(output, self._secrets)
            refusal = push_refusal(output)
            if refusal == "moved":
                raise PushRejected("git push rejected: the remote branch moved", detail, transient=True)
            if refusal == "refused":
                raise PushRejected("git push rejected by the remote", detail, transient=False)
            self._last_remote_error = "git push failed"
            log.warning("git command failed", extra={"fields": {"operation": "push", "detail": detail}})
            raise GitError("git push failed", detail, transient=True)
        self._last_remote_error = None
        # Mirror what the remote now holds, so a read without a fetch sees the pushed state.
        updates = f"update {self.tracking_ref} {commit}\nupdate {self.branch_ref} {commit}\n"
        await self.run("update-ref", "--stdin", stdin=updates.encode())

    async def advance_branch(self, commit: str, expected: str | None) -> None:
        """Move the local branch to ``commit`` only if it still points at ``expected``."""
        await self.run("update-ref", self.branch_ref, commit, expected or ZERO_OID)

    async def collect_garbage(self) -> None:
        """Every :data:`GC_EVERY_BATCHES` batches, let ``git gc --auto`` repack (cheap when not needed)."""
        if self._batches and self._batches % GC_EVERY_BATCHES == 0:
            await self.run("gc", "--auto", "--quiet")


def push_refusal(output: str) -> Literal["moved", "refused"] | None:
    """What a failed ``git push --porcelain`` says (stdout and stderr together).

    ``"moved"``: the branch moved or another push won the race for it (rebuild on a new
    base); ``"refused"``: the remote's own checks refused the commit (permanent for this
    commit); None: no verdict on the commit (transport failure, remote trouble).
    """
    # Only git's own status line of the ref counts: a hook's message ("remote: ...") is free
    # text and could say anything, "but expected" included.
    remote_rejected = [line for line in output.splitlines() if "[remote rejected]" in line]
    if remote_rejected:
        # The race first: git reports it as "[remote rejected]" too, but it is no refusal.
        if any(marker in line for line in remote_rejected for marker in _REMOTE_RACE):
            return "moved"
        if any(marker in line for line in remote_rejected for marker in _REMOTE_TROUBLE):
            return None
        return "refused"
    if "[remote failure]" in output:
        return None
    if any(marker in output for marker in _BRANCH_MOVED):
        return "moved"
    return None


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def fast_import_stream(
    base: str | None, changes: Sequence[Change], identity: Identity, timestamp: int
) -> bytes:
    """A ``git fast-import`` stream: one commit per change (marks ``:1..:n``) chained on ``base``.

    Paths are safe by construction (checked segments, no quoting needed). ``D <path>`` comes
    before the files so a directory ends up holding exactly the bundle; every commit also
    rewrites its request's generation marker, so the fence and the directory move together.
    """
    person = f"{identity.name} <{identity.email}> {timestamp} +0000".encode()
    parts: list[bytes] = [b"feature done\n", f"reset {BATCH_REF}\n".encode()]
    if base is not None:
        parts.append(f"from {base}\n".encode())
    parts.append(b"\n")
    for index, change in enumerate(changes, start=1):
        # Without ``from``, each commit's parent is the branch tip: ``base`` for the first one
        # (set by ``reset``), the previous commit afterwards; no base means a root commit.
        parts += [
            f"commit {BATCH_REF}\n".encode(),
            f"mark :{index}\n".encode(),
            b"author " + person + b"\n",
            b"committer " + person + b"\n",
            _data(change.message.encode()),
        ]
        if change.path is not None:
            parts.append(f"D {change.path}\n".encode())
        for name, content in change.files:
            parts.append(f"M 100644 inline {change.path}/{name}\n".encode())
            parts.append(_data(content))
        parts.append(f"M 100644 inline {change.marker_path}\n".encode())
        parts.append(_data(change.marker))
        parts.append(b"\n")
    parts.append(b"done\n")
    return b"".join(parts)
