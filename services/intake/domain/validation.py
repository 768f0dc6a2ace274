"""Validation of a new environment request: every failing field, in one answer.

The rules protect more than data quality: ``app`` and ``team`` become namespace names,
label values and GitOps paths, so they are DNS-1123 labels and nothing can escape the
request's directory; labels are checked against Kubernetes syntax so no value can alter
the structure of a rendered manifest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from contracts.kubernetes_names import is_dns1123_label, label_key_problem, label_value_problem
from contracts.models import EnvironmentClass, RequestSpec
from libs.errors import FieldError, ValidationFailed

NAME_MAX_LENGTH = 40
OWNER_MAX_LENGTH = 254
REPOSITORY_MAX_LENGTH = 512
REVISION_MAX_LENGTH = 200
MAX_LABELS = 32
MAX_LABELS_BYTES = 4096
RESERVED_LABEL_PREFIXES = ("platform.example.com/", "kubernetes.io/", "k8s.io/")
# Subdomains are Kubernetes' too (pod-security.kubernetes.io/enforce is set by policy packs).
RESERVED_LABEL_DOMAINS = (".kubernetes.io", ".k8s.io")

KNOWN_FIELDS = frozenset(
    {"app", "team", "class", "region", "ttl_hours", "owner", "repository", "revision", "labels"}
)

_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/-]+")
_SSH_URL = re.compile(r"ssh://([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/-]+")
_SCP_URL = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~-][A-Za-z0-9._~/-]*")
_OWNER = re.compile(r"[A-Za-z0-9@._+ '-]+")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a sane git ref or commit (git check-ref-format rules), or None."""
    if not revision or len(revision) > REVISION_MAX_LENGTH:
        return f"must be 1-{REVISION_MAX_LENGTH} characters"
    if _REF_FORBIDDEN.search(revision) or ".." in revision or "@{" in revision or "//" in revision:
        return "must be a git branch, tag or commit (no spaces, '..', '~', '^', ':', '?', '*', '[' or '\\')"
    if revision.startswith(("-", "/", ".")) or revision.endswith(("/", ".", ".lock")) or revision == "@":
        return "must be a git branch, tag or commit"
    if any(part.startswith(".") for part in revision.split("/")):
        return "ref components must not start with '.'"
    return None


def repository_problem(repository: str) -> str | None:
    if len(repository) > REPOSITORY_MAX_LENGTH:
        return f"must be at most {REPOSITORY_MAX_LENGTH} characters"
    if repository.startswith("https://"):
        authority = repository.removeprefix("https://").split("/", 1)[0]
        if "@" in authority:
            return "must not contain credentials"
        return None if _HTTPS_URL.fullmatch(repository) else "must be a valid https:// git URL"
    if repository.startswith("ssh://"):
        return None if _SSH_URL.fullmatch(repository) else "must be a valid ssh:// git URL"
    if _SCP_URL.fullmatch(repository) and ".." not in repository:
        return None
    return (
        "must be an https:// or ssh git URL "
        "(https://host/org/repo.git, ssh://git@host/org/repo.git, git@host:org/repo.git)"
    )


def _string(
    body: Mapping[str, Any], name: str, errors: list[FieldError], required: bool = True
) -> str | None:
    if name not in body or body[name] is None:
        if required:
            errors.append(FieldError(name, "is required"))
        return None
    value = body[name]
    if not isinstance(value, str):
        errors.append(FieldError(name, f"must be a string, not {_json_type(value)}"))
        return None
    return value


def _dns_label(body: Mapping[str, Any], name: str, errors: list[FieldError]) -> str | None:
    """A required string field that becomes part of namespace names and GitOps paths."""
    value = _string(body, name, errors)
    if value is not None and not is_dns1123_label(value, NAME_MAX_LENGTH):
        errors.append(
            FieldError(
                name,
                f"must be a DNS-1123 label: lowercase letters, digits and '-', at most {NAME_MAX_LENGTH}",
            )
        )
    return value


def _ttl_hours(
    body: Mapping[str, Any], environment_class: EnvironmentClass | None, errors: list[FieldError]
) -> int | None:
    """``ttl_hours``: whole hours from 1 to the class's ``max_ttl_hours`` (from 1 when the class
    is unknown: that is reported as the class's own error). None when it is not a number."""
    ttl_hours = body.get("ttl_hours")
    if ttl_hours is None:
        errors.append(FieldError("ttl_hours", "is required"))
        return None
    if isinstance(ttl_hours, bool) or not isinstance(ttl_hours, int):
        errors.append(
            FieldError("ttl_hours", f"must be a whole number of hours, not {_json_type(ttl_hours)}")
        )
        return None
    if environment_class is not None and not 1 <= ttl_hours <= environment_class.max_ttl_hours:
        errors.append(
            FieldError(
                "ttl_hours",
                f"must be between 1 and {environment_class.max_ttl_hours} for class {environment_class.name}",
            )
        )
    elif ttl_hours < 1:
        errors.append(FieldError("ttl_hours", "must be at least 1"))
    return ttl_hours


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def _labels(body: Mapping[str, Any], errors: list[FieldError]) -> dict[str, str]:
    raw = body.get("labels")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(FieldError("labels", f"must be an object of string values, not {_json_type(raw)}"))
        return {}
    if len(raw) > MAX_LABELS:
        errors.append(FieldError("labels", f"at most {MAX_LABELS} labels are allowed"))
        return {}
    labels: dict[str, str] = {}
    size = 0
    for key, value in raw.items():
        field_name = f"labels.{key}"
        problem = label_key_problem(key)
        if problem is None and (
            key.startswith(RESERVED_LABEL_PREFIXES) or key.rpartition("/")[0].endswith(RESERVED_LABEL_DOMAINS)
        ):
            problem = "label keys with a platform or Kubernetes prefix are reserved"
        if problem is not None:
            errors.append(FieldError(field_name, problem))
            continue
        if not isinstance(value, str):
            errors.append(FieldError(field_name, f"must be a string, not {_json_type(value)}"))
            continue
        value_problem = label_value_problem(value)
        if value_problem is not None:
            errors.append(FieldError(field_name, value_problem))
            continue
        size += len(key) + len(value)
        labels[key] = value
    if size > MAX_LABELS_BYTES:
        errors.append(FieldError("labels", f"labels must total at most {MAX_LABELS_BYTES} bytes"))
    return dict(sorted(labels.items()))


def validate_new_request(body: Mapping[str, Any], classes: Mapping[str, EnvironmentClass]) -> RequestSpec:
    """Turn a client's JSON object into a :class:`RequestSpec` or raise with every problem."""
    errors: list[FieldError] = [
        FieldError(str(name), "unknown field") for name in sorted(map(str, body)) if name not in KNOWN_FIELDS
    ]

    app = _dns_label(body, "app", errors)
    team = _dns_label(body, "team", errors)
    owner = _string(body, "owner", errors)
    if owner is not None and (
        not owner.strip() or len(owner) > OWNER_MAX_LENGTH or _OWNER.fullmatch(owner) is None
    ):
        errors.append(
            FieldError("owner", f"must be a name or e-mail address of at most {OWNER_MAX_LENGTH} characters")
        )

    class_name = _string(body, "class", errors)
    environment_class = classes.get(class_name) if class_name is not None else None
    if class_name is not None and environment_class is None:
        known = ", ".join(sorted(classes)) or "none"
        errors.append(FieldError("class", f"unknown environment class (known: {known})"))

    region = _string(body, "region", errors)
    if (
        region is not None
        and environment_class is not None
        and region not in environment_class.allowed_regions
    ):
        allowed = ", ".join(environment_class.allowed_regions)
        errors.append(FieldError("region", f"not allowed for class {class_name} (allowed: {allowed})"))

    ttl_hours = _ttl_hours(body, environment_class, errors)

    repository = _string(body, "repository", errors)
    if repository is not None:
        problem = repository_problem(repository)
        if problem:
            errors.append(FieldError("repository", problem))

    revision = _string(body, "revision", errors, required=False)
    if revision is not None:
        problem = revision_problem(revision)
        if problem:
            errors.append(FieldError("revision", problem))

    labels = _labels(body, errors)

    if errors:
        raise ValidationFailed(
            "invalid environment request: " + ", ".join(sorted({e.field for e in errors})),
            details=[e.as_dict() for e in errors],
        )
    # Every field was checked above; these narrow the types for the constructor.
    assert app
    assert team
    assert class_name
    assert region
    assert owner
    assert repository
    assert ttl_hours is not None
    return RequestSpec(
        app=app,
        team=team,
        class_name=class_name,
        region=region,
        ttl_hours=ttl_hours,
        owner=owner,
        repository=repository,
        revision=revision or "main",
        labels=labels,
    )


EXTENSION_FIELDS = frozenset({"ttl_hours"})


def validate_extension(body: Mapping[str, Any], environment_class: EnvironmentClass | None) -> int:
    """The new ``ttl_hours`` of a ``PATCH`` body, or :class:`ValidationFailed` naming every problem.

    Only ``ttl_hours`` may change after creation; anything else would need a new request
    (a different app, team or region is a different environment).
    """
    errors: list[FieldError] = [
        FieldError(str(name), "unknown field (only ttl_hours can be changed)")
        for name in sorted(map(str, body))
        if name not in EXTENSION_FIELDS
    ]
    ttl_hours = _ttl_hours(body, environment_class, errors)
    if errors:
        raise ValidationFailed(
            "invalid extension: " + ", ".join(sorted({e.field for e in errors})),
            details=[e.as_dict() for e in errors],
        )
    assert ttl_hours is not None
    return ttl_hours
