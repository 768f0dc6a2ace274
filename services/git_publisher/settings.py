"""Settings of the git-publisher service: the kit's groups, the attestation keys, and its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from libs.settings import AttestationSettings, Bounds, PlatformSettings, Secret, SecretUrl, setting

# A conservative branch name: what `git check-ref-format --branch` accepts, minus oddities.
_BRANCH = re.compile(r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*/$)(?!.*\.lock$)[A-Za-z0-9._/-]{1,200}$")
_IDENTITY_FORBIDDEN = re.compile(r"[<>\x00-\x1f]")


@dataclass(frozen=True)
class GitPublisherSettings(PlatformSettings, AttestationSettings):
    service_name: str = setting(
        "PLATFORM_SERVICE_NAME", "git_publisher", doc="Name used in logs and metrics."
    )
    health_address: str = setting(
        "PLATFORM_HEALTH_ADDRESS", "127.0.0.1:9105", doc="host:port for /healthz, /readyz and /metrics."
    )
    # Handlers wait for the batched push without a database connection (two-phase
    # handlers), so this many can wait together and fill one push.
    git_publish_concurrency: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_GIT_PUBLISH_CONCURRENCY", 64, doc="Bundles in flight at once (waiting for a batched push)."
    )
    gitops_repo_url: SecretUrl | None = setting(
        "PLATFORM_GITOPS_REPO_URL",
        None,
        doc="GitOps remote (https, ssh, file URL or a path); unset: commits stay in the local repository.",
    )
    gitops_repo_path: Path = setting(
        "PLATFORM_GITOPS_REPO_PATH",
        Path("./state/gitops-repo"),
        doc="Where the service keeps its own bare repository (created when missing).",
    )
    git_push_enabled: bool = setting(
        "PLATFORM_GIT_PUSH_ENABLED", False, doc="Push commits to the remote; needs PLATFORM_GITOPS_REPO_URL."
    )
    git_branch: str = setting("PLATFORM_GIT_BRANCH", "main", doc="Branch that environments are committed to.")
    git_author_name: str = setting(
        "PLATFORM_GIT_AUTHOR_NAME", "platform-control-plane", doc="Author and committer name of commits."
    )
    git_author_email: str = setting(
        "PLATFORM_GIT_AUTHOR_EMAIL", "platform@example.com", doc="Author and committer email of commits."
    )
    git_batch_window_seconds: Annotated[float, Bounds(ge=0)] = setting(
        "PLATFORM_GIT_BATCH_WINDOW_SECONDS",
        0.2,
        doc="How long the first bundle of a batch waits for more before one fetch+commit+push.",
    )
    git_token: Secret | None = setting(
        "PLATFORM_GIT_TOKEN",
        None,
        doc="Token for HTTPS remotes, sent as an Authorization header (never in the URL).",
    )
    git_timeout_seconds: Annotated[float, Bounds(gt=0)] = setting(
        "PLATFORM_GIT_TIMEOUT_SECONDS", 60.0, doc="Upper bound of one git command (fetch, push, ...)."
    )
    git_push_attempts: Annotated[int, Bounds(ge=1)] = setting(
        "PLATFORM_GIT_PUSH_ATTEMPTS",
        5,
        doc="Fetch+rebuild+push rounds per batch when the remote moved (non-fast-forward) or failed.",
    )
    # git and the ssh it may start need a search path and a home (config, keys, known_hosts);
    # they get exactly these two from the process environment and nothing else.
    git_search_path: str = setting(
        "PATH", "/usr/local/bin:/usr/bin:/bin", doc="Where git, ssh and credential helpers are looked up."
    )
    git_home: str | None = setting("HOME", None, doc="Home directory git and ssh read their config from.")

    def validate(self) -> list[str]:
        problems = super().validate()
        if self.git_push_enabled and not self.gitops_repo_url:
            problems.append("PLATFORM_GIT_PUSH_ENABLED needs PLATFORM_GITOPS_REPO_URL")
        if not _BRANCH.match(self.git_branch):
            problems.append("PLATFORM_GIT_BRANCH is not a valid branch name")
        if not self.git_author_name.strip() or _IDENTITY_FORBIDDEN.search(self.git_author_name):
            problems.append("PLATFORM_GIT_AUTHOR_NAME must be non-empty, without '<', '>' or control chars")
        if "@" not in self.git_author_email or _IDENTITY_FORBIDDEN.search(self.git_author_email):
            problems.append("PLATFORM_GIT_AUTHOR_EMAIL must be an email address")
        if self.git_token is not None and any(c in self.git_token.reveal() for c in "\r\n"):
            problems.append("PLATFORM_GIT_TOKEN must be a single line")
        # The approval secret is not required here, even in strict mode: git-publisher only
        # verifies attestations, with the attestation key (AttestationSettings.validate).
        return problems
