"""What a request must satisfy beyond its body: the environment class it names.

The body's own rules (names that become namespaces and paths, label syntax, git URLs) are
the :mod:`contracts.inputs` models', checked when the message is decoded. What is left
needs intake's replica of the catalog: the class exists, the region is one it allows and
the TTL stays within its maximum. Every failing field is named at once, with the model's:
:func:`catalog_problems` also judges the fields of a body that failed its model (whatever
of ``class``, ``region`` and ``ttl_hours`` has the right type), so a client still gets one
answer naming everything.
"""

from __future__ import annotations

from collections.abc import Mapping

from contracts.inputs import EnvironmentRequestInput, ExtensionInput
from contracts.models import EnvironmentClass, RequestSpec
from libs.errors import FieldError, ValidationFailed, echoed


def _ttl_problem(ttl_hours: int, environment_class: EnvironmentClass) -> FieldError | None:
    if ttl_hours <= environment_class.max_ttl_hours:
        return None
    return FieldError(
        "ttl_hours",
        f"must be between 1 and {environment_class.max_ttl_hours} for class {environment_class.name}",
    )


def _raise_if_any(what: str, errors: list[FieldError]) -> None:
    if errors:
        raise ValidationFailed(
            f"invalid {what}: " + ", ".join(dict.fromkeys(e.field for e in errors)),
            details=[e.as_dict() for e in errors],
        )


def catalog_problems(
    class_name: object, region: object, ttl_hours: object, classes: Mapping[str, EnvironmentClass]
) -> list[FieldError]:
    """What the catalog refuses: an unknown class, a region it does not allow, a TTL above its
    maximum. Values of the wrong type are the model's to report and are skipped here."""
    if not isinstance(class_name, str):
        return []
    environment_class = classes.get(class_name)
    if environment_class is None:
        known = f"known: {', '.join(sorted(classes))}" if classes else "there are none yet"
        return [FieldError("class", f"unknown environment class {echoed(class_name)} ({known})")]
    errors = []
    if isinstance(region, str) and region not in environment_class.allowed_regions:
        allowed = ", ".join(environment_class.allowed_regions)
        errors.append(FieldError("region", f"not allowed for class {class_name} (allowed: {allowed})"))
    if isinstance(ttl_hours, int) and not isinstance(ttl_hours, bool):
        ttl_problem = _ttl_problem(ttl_hours, environment_class)
        if ttl_problem is not None:
            errors.append(ttl_problem)
    return errors


def request_spec(body: EnvironmentRequestInput, classes: Mapping[str, EnvironmentClass]) -> RequestSpec:
    """The request as intake stores it, or :class:`ValidationFailed` naming every field the
    catalog refuses."""
    _raise_if_any(
        "environment request", catalog_problems(body.class_name, body.region, body.ttl_hours, classes)
    )
    return RequestSpec(
        app=body.app,
        team=body.team,
        class_name=body.class_name,
        region=body.region,
        ttl_hours=body.ttl_hours,
        owner=body.owner,
        repository=body.repository,
        revision=body.revision or "main",
        labels=dict(sorted((body.labels or {}).items())),
    )


def extended_ttl(body: ExtensionInput, environment_class: EnvironmentClass | None) -> int:
    """The new ``ttl_hours`` of a ``PATCH``, within the request's class maximum (a class no
    longer in the catalog leaves only the body's own bounds)."""
    problem = None if environment_class is None else _ttl_problem(body.ttl_hours, environment_class)
    _raise_if_any("extension", [problem] if problem is not None else [])
    return body.ttl_hours
