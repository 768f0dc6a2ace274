"""Where an environment lives: its GitOps directory, namespace and Argo CD application name.

The directory ``clusters/<region>/teams/<team>/<app>/<request-id>`` is built only from
segments that are DNS-1123 labels or request ids, re-checked here although intake
validated them, so that no value (``..``, ``/``, an absolute path) can point a commit or a
cluster apply outside the request's own directory.
"""

from __future__ import annotations

import re

from contracts.kubernetes_names import DNS1123_SUBDOMAIN, is_dns1123_label
from libs import environment_layout
from libs.environment_layout import NAMESPACE_MAX_LENGTH
from services.renderer.domain.bundle import BundleInvalid

REQUEST_ID = re.compile(r"req-[0-9a-f]{16}")
APPLICATION_NAME_MAX_LENGTH = 253
# One path component on common filesystems (ext4, APFS, NTFS).
FILE_NAME_MAX_LENGTH = 255
_FILE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?\.yaml")


def check_path_segments(region: str, team: str, app: str, request_id: str) -> None:
    """Raise :class:`BundleInvalid` unless every GitOps path segment is safe."""
    problems = [
        f"{field} must be a DNS-1123 label"
        for field, value in (("region", region), ("team", team), ("app", app))
        if not is_dns1123_label(value)
    ]
    if REQUEST_ID.fullmatch(request_id) is None:
        problems.append("request id must look like req-<16 lowercase hex digits>")
    if problems:
        raise BundleInvalid("unsafe GitOps path: " + "; ".join(problems))


def gitops_path(region: str, team: str, app: str, request_id: str) -> str:
    """The request's directory, relative to the repository root, without a trailing slash."""
    check_path_segments(region, team, app, request_id)
    return environment_layout.gitops_path(region, team, app, request_id)


def namespace_name(team: str, app: str, request_id: str) -> str:
    """The shared naming rule (:mod:`libs.environment_layout`), checked to be a DNS-1123 label."""
    name = environment_layout.namespace_name(team, app, request_id)
    if not is_dns1123_label(name, NAMESPACE_MAX_LENGTH):
        raise BundleInvalid(f"namespace name {name!r} is not a DNS-1123 label")
    return name


def application_name(team: str, app: str, request_id: str) -> str:
    """Unique per request (Argo CD applications share one namespace across all teams)."""
    name = f"{team}-{app}-{request_id}"
    if len(name) > APPLICATION_NAME_MAX_LENGTH or DNS1123_SUBDOMAIN.fullmatch(name) is None:
        raise BundleInvalid("Argo CD application name is not a DNS-1123 subdomain")
    return name


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file of the request directory, or None.

    One lowercase component ending in ``.yaml``: no ``/``, no ``..``, nothing hidden.
    """
    if len(name.encode()) > FILE_NAME_MAX_LENGTH:
        return f"file name is longer than {FILE_NAME_MAX_LENGTH} bytes"
    if _FILE_NAME.fullmatch(name) is None or ".." in name:
        return "file name must be lowercase letters, digits, '-' and '.', ending in .yaml"
    return None
