"""What clients may send: the public inputs as pydantic models, each rule declared once.

The gateway validates HTTP bodies with these models (so the OpenAPI document shows their
constraints) and the RPC messages of :mod:`contracts.rpc` carry them, so the owning service
validates the same body again on its side of the bus: a caller other than the gateway gets
the same answer. Every failing field is reported at once (pydantic collects them all);
:func:`libs.errors.field_errors_from` turns a ``pydantic.ValidationError`` into the API's
``[{"field", "message"}]`` details.

Only what the body alone decides lives here. What needs the catalog (the class exists, the
region is one of the class's, the TTL within its maximum, a class's profile and packs exist,
quantities and pack manifests) stays with the service that owns the catalog, as domain
functions receiving these validated models.

The models are strict (``"24"`` is not a number of hours, ``true`` not a count) and refuse
unknown fields; the wire names are the aliases (``class``, ``apiVersion``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.git_names import REVISION_PATTERN, REVISION_RULE, revision_problem, url_endpoint_problem
from contracts.kubernetes_names import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    LABEL_NAME,
    label_key_problem,
    label_value_problem,
)
from contracts.kubernetes_quantities import SUFFIXES
from contracts.models import PACK_KINDS

# app and team become namespace names, label values and GitOps path segments.
NAME_MAX_LENGTH = 40
OWNER_MAX_LENGTH = 254
REPOSITORY_MAX_LENGTH = 512
REVISION_MAX_LENGTH = 200
MAX_LABELS = 32
MAX_LABELS_BYTES = 4096
RESERVED_LABEL_PREFIXES = ("platform.example.com/", "kubernetes.io/", "k8s.io/")
# Subdomains are Kubernetes' too (pod-security.kubernetes.io/enforce is set by policy packs).
RESERVED_LABEL_DOMAINS = (".kubernetes.io", ".k8s.io")
MAX_REASON_LENGTH = 1000

# Class, profile and pack names end up in label values (<prefix>/class, <prefix>/quota-profile).
CATALOG_NAME_MAX_LENGTH = 63
DESCRIPTION_MAX_LENGTH = 1000
MAX_TTL_HOURS = 24 * 365
MAX_NAMESPACES = 100
MAX_APPROVALS = 10
MAX_ENVIRONMENTS_PER_TEAM = 100_000
MAX_LIST_ITEMS = 100
MAX_QUOTA_VALUE = 1_000_000
MAX_METADATA_VALUE_LENGTH = 4096
# Upper bound of a budget or a cost: keeps sums exact in a double and rejects typos like 1e30.
MAX_USD = 1_000_000_000.0
# A formula's unit: no suffix, or one of the quantity grammar's (its owner lists them).
QUANTITY_UNITS = ("", *sorted(SUFFIXES))


def _known_unit(unit: str) -> str:
    if unit not in QUANTITY_UNITS:
        raise ValueError(f"must be one of {', '.join(repr(u) for u in QUANTITY_UNITS)}")
    return unit


QuantityUnit = Annotated[
    str,
    Field(max_length=2, json_schema_extra={"enum": list(QUANTITY_UNITS)}),
    AfterValidator(_known_unit),
]
# A ConfigMap key (pack manifests' data; pack metadata is written as "<pack>.<key>").
CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_HOST = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Names and addresses, spaces included; not blank.
_OWNER = re.compile(r"[A-Za-z0-9@._+ '-]*[A-Za-z0-9@._+'-][A-Za-z0-9@._+ '-]*")
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/-]+")
_SSH_URL = re.compile(r"ssh://([A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/-]+")
_SCP_URL = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~-][A-Za-z0-9._~/-]*")
_NO_CONTROL_CHARACTERS = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"


def _whole(pattern: re.Pattern[str]) -> str:
    """``pattern`` anchored for pydantic, which searches rather than matches."""
    return f"^(?:{pattern.pattern})$"


def explained(message: str) -> WrapValidator:
    """Say ``message`` instead of "String should match pattern '^…$'" when a pattern fails;
    the pattern still shows in the JSON Schema, and type errors keep their own wording."""

    def explain(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if any(error["type"] == "string_pattern_mismatch" for error in exc.errors()):
                raise PydanticCustomError("invalid_format", message) from None
            raise

    return WrapValidator(explain)


def _checked(problem: Callable[[str], str | None]) -> AfterValidator:
    """A validator from a ``*_problem`` function (None: fine, else why not)."""

    def check(value: str) -> str:
        found = problem(value)
        if found is not None:
            raise ValueError(found)
        return value

    return AfterValidator(check)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_left_out(cls, data: Any) -> Any:
        """A field given as null is a field left out (YAML writes an empty key as null): a
        required one "is required", another takes its default. Fields that take null keep it."""
        if not isinstance(data, dict):
            return data
        left_out = _not_nullable(cls)
        return {key: value for key, value in data.items() if value is not None or key not in left_out}


@functools.cache
def _not_nullable(model: type[BaseModel]) -> frozenset[str]:
    """Wire names of ``model``'s fields whose type does not include null."""
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if type(None) not in get_args(field.annotation)
    )


# -- shared value types ------------------------------------------------------------------------

NAME_RULE = (
    "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a "
    f"letter or digit, at most {NAME_MAX_LENGTH} characters"
)
"""What an ``app`` or ``team`` name must be, wherever one is refused (a body, a filter, a URL)."""

RequestName = Annotated[
    str,
    Field(max_length=NAME_MAX_LENGTH, pattern=_whole(DNS1123_LABEL)),
    explained(NAME_RULE),
]
"""``app`` and ``team``: namespace names, label values and GitOps path segments."""

DnsLabel = Annotated[
    str,
    Field(max_length=63, pattern=_whole(DNS1123_LABEL)),
    explained("must be a DNS-1123 label (lowercase letters, digits and '-')"),
]
DnsSubdomain = Annotated[
    str,
    Field(max_length=253, pattern=_whole(DNS1123_SUBDOMAIN)),
    explained("must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.')"),
]
LabelKey = Annotated[str, _checked(label_key_problem)]
LabelValue = Annotated[
    str,
    Field(
        description="A Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit (or empty)",
        # Shown, not enforced here: label_value_problem is the rule, in its own words.
        json_schema_extra={"pattern": f"^(?:{LABEL_NAME.pattern})?$", "maxLength": 63},
    ),
    _checked(label_value_problem),
]
# The JSON Schema of a map keyed by label keys (the keys' rule is label_key_problem's).
LABEL_KEY_SCHEMA: dict[str, Any] = {
    "pattern": f"^(?:{DNS1123_SUBDOMAIN.pattern}/)?{LABEL_NAME.pattern}$",
    "maxLength": 253 + 1 + 63,
}
TtlHours = Annotated[int, Field(ge=1, le=MAX_TTL_HOURS, description="Whole hours")]
Usd = Annotated[float, Field(ge=0, le=MAX_USD, allow_inf_nan=False, description="US dollars")]
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX_LENGTH)]


def _no_repeats(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not repeat an item")
    return values


def _resource_name_problem(name: str) -> str | None:
    if label_key_problem(name) is not None:
        return "is not a resource name (e.g. pods, cpu, requests.memory, count/deployments.apps)"
    return None


ResourceName = Annotated[str, _checked(_resource_name_problem)]


# -- environment requests ----------------------------------------------------------------------


def repository_problem(repository: str) -> str | None:
    """Why ``repository`` is not a git URL the platform will clone (no credentials, no local
    paths, no transports that run commands, no option-like user or host), or None."""
    endpoint = url_endpoint_problem(repository)
    if endpoint is not None:
        return endpoint
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


def _request_label_key_problem(key: str) -> str | None:
    problem = label_key_problem(key)
    if problem is None and (
        key.startswith(RESERVED_LABEL_PREFIXES) or key.rpartition("/")[0].endswith(RESERVED_LABEL_DOMAINS)
    ):
        return "label keys with a platform or Kubernetes prefix are reserved"
    return problem


def _labels_count(labels: Any) -> Any:
    """Too many labels is one problem, whatever their keys: checked before them."""
    if isinstance(labels, dict) and len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels are allowed")
    return labels


def _labels_size(labels: dict[str, str] | None) -> dict[str, str] | None:
    if labels and sum(len(key) + len(value) for key, value in labels.items()) > MAX_LABELS_BYTES:
        raise ValueError(f"labels must total at most {MAX_LABELS_BYTES} bytes")
    return labels


RequestLabels = Annotated[
    dict[Annotated[str, _checked(_request_label_key_problem)], LabelValue],
    Field(
        max_length=MAX_LABELS,
        description=(
            "Kubernetes labels for the environment's namespaces: keys are [prefix/]name (name: "
            "1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit; "
            f"prefix: a DNS subdomain). Keys under {', '.join(RESERVED_LABEL_PREFIXES)} and their "
            f"subdomains are reserved. At most {MAX_LABELS} labels, {MAX_LABELS_BYTES} bytes in all."
        ),
        json_schema_extra={"propertyNames": LABEL_KEY_SCHEMA},
    ),
    BeforeValidator(_labels_count),
    AfterValidator(_labels_size),
]


class EnvironmentRequestInput(_Input):
    """``POST /v1/environment-requests``: a new environment for an app team.

    ``class`` must name an environment class, ``region`` be one the class allows and
    ``ttl_hours`` stay within the class's ``max_ttl_hours`` (intake checks these against its
    catalog)."""

    model_config = ConfigDict(title="environment request")

    app: RequestName
    team: RequestName
    class_name: str = Field(alias="class", max_length=CATALOG_NAME_MAX_LENGTH)
    region: str = Field(max_length=CATALOG_NAME_MAX_LENGTH)
    ttl_hours: TtlHours
    owner: Annotated[
        str,
        Field(
            max_length=OWNER_MAX_LENGTH,
            pattern=_whole(_OWNER),
            description="A person's name or e-mail address: letters, digits, spaces and @._+'-, not blank",
        ),
        explained(f"must be a name or e-mail address of at most {OWNER_MAX_LENGTH} characters"),
    ]
    repository: Annotated[
        str,
        Field(
            max_length=REPOSITORY_MAX_LENGTH,
            description=(
                "The app's git repository: https://host/org/repo.git, ssh://[user@]host/org/repo.git "
                "or user@host:org/repo.git; no credentials in the URL, no local paths"
            ),
        ),
        _checked(repository_problem),
    ]
    revision: (
        Annotated[
            str,
            Field(min_length=1, max_length=REVISION_MAX_LENGTH, pattern=REVISION_PATTERN),
            explained(REVISION_RULE),
            _checked(revision_problem),
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "A git branch, tag or commit id: ASCII letters, digits, '.', '_', '+', '-' and '/' in "
            "git check-ref-format's rules (no '..', '//', leading '-', '.' or '/', no component "
            "starting or ending with '.' or ending in '.lock'); main when left out"
        ),
    )
    labels: RequestLabels | None = None


class ExtensionInput(_Input):
    """``PATCH /v1/environment-requests/{id}``: only the TTL can change after creation (a
    different app, team or region is a different environment)."""

    model_config = ConfigDict(title="extension")

    ttl_hours: TtlHours


class RejectionInput(_Input):
    """``POST /v1/environment-requests/{id}/reject``: why, for the requester and the record."""

    model_config = ConfigDict(title="rejection")

    reason: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON_LENGTH),
        Field(pattern=_NO_CONTROL_CHARACTERS),
        explained("must not contain control characters"),
    ]


class TeamBudgetInput(_Input):
    """``PUT /v1/teams/{team}/budget``: the team's monthly budget; null removes it."""

    model_config = ConfigDict(title="team budget")

    monthly_usd: Usd | None


class ConsumerReplayInput(_Input):
    """``POST /v1/consumers/{service}/replay``: where in the stream the service's consumers
    replay from (one of ``from_sequence`` and ``from_time``), up to ``to_sequence`` (default:
    the stream's last message when asked); ``dry_run`` counts and changes nothing."""

    model_config = ConfigDict(title="consumer replay")

    from_sequence: (
        Annotated[int, Field(ge=1, description="A stream sequence (1: the oldest kept)")] | None
    ) = None
    from_time: (
        Annotated[
            AwareDatetime,
            Field(
                strict=False,
                description="RFC 3339 time with its offset: the first message stored at or after it",
            ),
        ]
        | None
    ) = None
    to_sequence: Annotated[int, Field(ge=1, description="The last stream sequence to replay")] | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_start(self) -> ConsumerReplayInput:
        if (self.from_sequence is None) == (self.from_time is None):
            raise PydanticCustomError("one_start", "give exactly one of from_sequence and from_time")
        if (
            self.to_sequence is not None
            and self.from_sequence is not None
            and self.to_sequence < self.from_sequence
        ):
            raise PydanticCustomError("order", "to_sequence must not be below from_sequence")
        return self


# -- the catalog -------------------------------------------------------------------------------

CatalogName = Annotated[
    str,
    Field(max_length=CATALOG_NAME_MAX_LENGTH, description="Must repeat the name in the URL"),
]


class EnvironmentClassInput(_Input):
    """``PUT /v1/environment-classes/{name}``: the class becomes exactly this body; a field
    left out gets its default. ``quota_profile`` and ``policy_packs`` must exist."""

    model_config = ConfigDict(title="environment class")

    name: CatalogName | None = None
    description: Description = ""
    allowed_regions: Annotated[
        list[DnsLabel], Field(min_length=1, max_length=MAX_LIST_ITEMS), AfterValidator(_no_repeats)
    ]
    requires_approval: bool = False
    approvals_required: int | None = Field(
        default=None,
        ge=0,
        le=MAX_APPROVALS,
        validate_default=True,
        description="At least 1 with requires_approval, else 0; defaults to that",
    )
    auto_reconcile: bool = True
    max_ttl_hours: TtlHours
    default_namespaces: int = Field(default=1, ge=1, le=MAX_NAMESPACES)
    quota_profile: str = Field(max_length=CATALOG_NAME_MAX_LENGTH)
    policy_packs: Annotated[list[str], Field(max_length=MAX_LIST_ITEMS), AfterValidator(_no_repeats)] = []
    estimated_monthly_cost_usd: Usd = 0.0
    max_environments_per_team: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ENVIRONMENTS_PER_TEAM,
        description="Live environments of this class one team may have at once; null: no cap",
    )

    @field_validator("approvals_required")
    @classmethod
    def _approvals_match_requires_approval(cls, value: int | None, info: ValidationInfo) -> int:
        requires_approval = info.data.get("requires_approval", False)
        if value is None:
            return 1 if requires_approval else 0
        if requires_approval and value < 1:
            raise ValueError("must be at least 1 when requires_approval is true")
        if not requires_approval and value > 0:
            raise ValueError("must be 0 when requires_approval is false")
        return value


class QuotaFormulaInput(_Input):
    """``max(min, per_namespace * N)`` followed by ``unit``; N is the class's ``default_namespaces``."""

    model_config = ConfigDict(title="quota formula")

    min: int = Field(default=0, ge=0, le=MAX_QUOTA_VALUE)
    per_namespace: int = Field(default=0, ge=0, le=MAX_QUOTA_VALUE)
    unit: QuantityUnit = ""


Quantities = dict[ResourceName, Annotated[str, Field(max_length=64)]]


class LimitRangeInput(_Input):
    """Per-container LimitRange values (Kubernetes quantities such as ``500m`` or ``2Gi``)."""

    model_config = ConfigDict(title="limit range")

    default: Quantities = {}
    default_request: Quantities = {}
    max: Quantities = {}


class QuotaProfileInput(_Input):
    """``PUT /v1/quota-profiles/{name}``: ResourceQuota formulas and LimitRange values."""

    model_config = ConfigDict(title="quota profile")

    name: CatalogName | None = None
    description: Description = ""
    resource_quota: dict[ResourceName, QuotaFormulaInput] = Field(min_length=1)
    limit_range: LimitRangeInput


RuleEffect = Literal["deny", "warn"]
Host = Annotated[
    str,
    Field(max_length=253, pattern=_whole(_HOST)),
    explained("must be a lowercase host name (or *.domain)"),
]


class RequiredLabelsRuleInput(_Input):
    """The request must carry each of ``labels`` (label keys) with a non-empty value."""

    type: Literal["required_labels"]
    labels: list[LabelKey] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    effect: RuleEffect = "deny"


class AllowedRegionsRuleInput(_Input):
    """The request's region must be one of ``regions`` (narrows the class's regions)."""

    type: Literal["allowed_regions"]
    regions: list[DnsLabel] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    effect: RuleEffect = "deny"


class ForbiddenRegionsRuleInput(_Input):
    """The request's region must not be one of ``regions``."""

    type: Literal["forbidden_regions"]
    regions: list[DnsLabel] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    effect: RuleEffect = "deny"


class MaxTtlHoursRuleInput(_Input):
    """``ttl_hours`` must not exceed ``hours`` (a cap below the class maximum)."""

    type: Literal["max_ttl_hours"]
    hours: TtlHours
    effect: RuleEffect = "deny"


class MinApprovalsRuleInput(_Input):
    """The request needs at least ``approvals`` approvals, whatever its class says."""

    type: Literal["min_approvals"]
    approvals: int = Field(default=1, ge=1, le=MAX_APPROVALS)


class AllowedRepositoryHostsRuleInput(_Input):
    """The app repository must be on one of ``hosts`` (https, ssh or scp-like URLs)."""

    type: Literal["allowed_repository_hosts"]
    hosts: list[Host] = Field(min_length=1, max_length=MAX_LIST_ITEMS)
    effect: RuleEffect = "deny"


class PinnedRevisionRuleInput(_Input):
    """``revision`` must be immutable: a full commit SHA or a version tag (``v1.2.3``)."""

    type: Literal["pinned_revision"]
    effect: RuleEffect = "deny"


class MaxMonthlyCostRuleInput(_Input):
    """The class's estimated monthly cost must not exceed ``usd``."""

    type: Literal["max_monthly_cost_usd"]
    usd: Usd
    effect: RuleEffect = "deny"


class TeamBudgetRuleInput(_Input):
    """The team's active environments plus this request must stay within the team's monthly
    budget; otherwise the request is rejected or needs ``approvals`` approvals."""

    type: Literal["team_budget"]
    on_exceed: Literal["reject", "require_approval"] = "reject"
    approvals: int = Field(default=1, ge=1, le=MAX_APPROVALS)


PackRuleInput = Annotated[
    RequiredLabelsRuleInput
    | AllowedRegionsRuleInput
    | ForbiddenRegionsRuleInput
    | MaxTtlHoursRuleInput
    | MinApprovalsRuleInput
    | AllowedRepositoryHostsRuleInput
    | PinnedRevisionRuleInput
    | MaxMonthlyCostRuleInput
    | TeamBudgetRuleInput,
    Field(discriminator="type"),
]

ConfigMapKey = Annotated[
    str, Field(pattern=_whole(CONFIGMAP_KEY)), explained("keys must be letters, digits, '-', '_' or '.'")
]


class PackManifestInput(_Input):
    """An object the pack adds to every environment of its classes (namespace and labels are
    filled in at render time): a ConfigMap has ``data``, the other kinds a ``spec``."""

    model_config = ConfigDict(title="pack manifest")

    api_version: str = Field(alias="apiVersion", max_length=CATALOG_NAME_MAX_LENGTH)
    kind: str = Field(max_length=CATALOG_NAME_MAX_LENGTH)
    name: DnsSubdomain
    spec: dict[str, Any] = {}
    data: dict[ConfigMapKey, str] | None = None

    @field_validator("spec")
    @classmethod
    def _configmap_has_no_spec(cls, spec: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if _allowed_kind(info) == "ConfigMap" and spec:
            raise ValueError("a ConfigMap has data, not a spec")
        return spec

    @field_validator("data")
    @classmethod
    def _only_configmap_has_data(
        cls, data: dict[str, str] | None, info: ValidationInfo
    ) -> dict[str, str] | None:
        kind = _allowed_kind(info)
        if kind not in (None, "ConfigMap") and data is not None:
            raise ValueError(f"a {kind} has a spec, not data")
        return data

    @model_validator(mode="after")
    def _kind_is_allowed(self) -> PackManifestInput:
        if (self.api_version, self.kind) not in PACK_KINDS:
            allowed = ", ".join(f"{kind} ({api})" for api, kind in sorted(PACK_KINDS))
            raise ValueError(f"kind {self.kind} of {self.api_version} is not allowed (allowed: {allowed})")
        return self


def _allowed_kind(info: ValidationInfo) -> str | None:
    """The manifest's kind when it is one a pack may add (else its spec and data are moot)."""
    kind = info.data.get("kind")
    return kind if (info.data.get("api_version"), kind) in PACK_KINDS else None


class PolicyPackInput(_Input):
    """``PUT /v1/policy-packs/{name}``: request rules, extra manifests, namespace labels and
    ConfigMap metadata (written as ``<pack>.<key>`` into the ``platform-policy-pack`` ConfigMap)."""

    model_config = ConfigDict(title="policy pack")

    name: CatalogName | None = None
    description: Description = ""
    rules: list[PackRuleInput] = Field(default=[], max_length=MAX_LIST_ITEMS)
    manifests: list[PackManifestInput] = Field(default=[], max_length=MAX_LIST_ITEMS)
    namespace_labels: Annotated[
        dict[LabelKey, LabelValue], Field(json_schema_extra={"propertyNames": LABEL_KEY_SCHEMA})
    ] = {}
    metadata: dict[str, Annotated[str, Field(max_length=MAX_METADATA_VALUE_LENGTH)]] = {}


UNION_MEMBER_TAGS: frozenset[str] = frozenset(
    member.model_fields["type"].annotation.__args__[0] for member in get_args(get_args(PackRuleInput)[0])
)
"""The ``type`` of each tagged union member (a pack's rules). pydantic puts it into an error's
location (``rules[0].max_ttl_hours.hours``); the API names the field without it."""

PUBLIC_INPUTS: tuple[type[BaseModel], ...] = (
    EnvironmentRequestInput,
    ExtensionInput,
    RejectionInput,
    TeamBudgetInput,
    EnvironmentClassInput,
    QuotaProfileInput,
    PolicyPackInput,
    ConsumerReplayInput,
)


# -- on the bus --------------------------------------------------------------------------------
# RPC messages are msgspec Structs; these hooks let msgspec carry the models inside them.


def encode_input(value: Any) -> Any:
    """msgspec ``enc_hook``: a model as the JSON object a client would send (wire names, and
    only the fields that were set, so the receiver sees the body as it was given)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def decode_input(target: type[Any], value: Any) -> Any:
    """msgspec ``dec_hook``: validate ``value`` as the model ``target`` (a failure is a
    ``pydantic.ValidationError``, which msgspec keeps as the ``__cause__`` of its own error)."""
    if isinstance(target, type) and issubclass(target, BaseModel):
        return target.model_validate(value)
    raise NotImplementedError(f"cannot decode {target!r}")


def json_schema_hook(target: type[Any]) -> dict[str, Any]:
    """msgspec ``schema_hook``: the model's own JSON Schema, self-contained (its ``$defs``
    inlined) so it can sit inside a msgspec schema document."""
    if isinstance(target, type) and issubclass(target, BaseModel):
        schema = target.model_json_schema(by_alias=True)
        definitions = schema.pop("$defs", {})
        return _inline(schema, definitions)  # type: ignore[no-any-return]
    raise NotImplementedError(f"no JSON Schema for {target!r}")


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
        if isinstance(node.get("discriminator"), dict):
            # Its mapping points into the $defs that are gone; the property name still holds.
            node = {**node, "discriminator": {"propertyName": node["discriminator"]["propertyName"]}}
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node
