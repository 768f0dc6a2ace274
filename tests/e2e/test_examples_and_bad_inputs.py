"""The sample payloads of examples/ and a table of hostile inputs, against the real stack.

Every bad input must be refused with a 4xx naming the offending field (in ``details``),
never a 5xx, and nothing may be stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.api_flows import create, example
from tests.support.stack import RunningStack

MISSING = object()


@pytest.fixture(scope="module")
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client("alice@example.com", "requester", ["payments"]) as client:
        yield client


@pytest.fixture(scope="module")
def approver(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client("bob@example.com", "approver") as client:
        yield client


# -- examples/ ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "settles_in"),
    [("preview", "ready"), ("shared-staging", "ready"), ("production", "pending_approval")],
)
def test_the_sample_payloads_are_accepted(
    stack: RunningStack, api: httpx.Client, name: str, settles_in: str
) -> None:
    created = create(api, example(name))
    assert created["class"] == example(name)["class"]
    final = stack.wait_for_status(api, created["id"], {settles_in, "failed", "rejected"})
    assert final["status"] == settles_in, final["last_error"]


def test_the_bad_sample_names_every_failing_field(api: httpx.Client) -> None:
    response = api.post("/v1/environment-requests", json=example("bad-request"))
    assert response.status_code == 422, response.text
    fields = {detail["field"] for detail in response.json()["details"]}
    assert fields == {
        "app",
        "team",
        "region",
        "ttl_hours",
        "owner",
        "repository",
        "revision",
        "labels.tier",
        "priority",
    }


# -- hostile inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BadInput:
    """``target``: None (create), "any" (PATCH a request) or "pending" (reject a production request)."""

    name: str
    field: str
    body: Any = MISSING
    content: bytes | None = None
    method: str = "POST"
    path: str = "/v1/environment-requests"
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    target: str | None = None


def create_with(**changes: Any) -> dict[str, Any]:
    body = example("preview")
    for key, value in changes.items():
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def bad(name: str, field_name: str, **changes: Any) -> BadInput:
    return BadInput(name, field_name, body=create_with(**changes))


BAD_INPUTS = [
    # app and team become namespace names, label values and GitOps path segments.
    bad("app path traversal", "app", app="../../etc"),
    bad("app with a slash", "app", app="a/b"),
    bad("app is dot-dot", "app", app=".."),
    bad("app uppercase", "app", app="Payments"),
    bad("app leading dash", "app", app="-api"),
    bad("app trailing dash", "app", app="api-"),
    bad("app too long", "app", app="a" * 41),
    bad("app empty", "app", app=""),
    bad("app cyrillic look-alike", "app", app="pаyments"),
    bad("app trailing newline", "app", app="api\n"),
    bad("app NUL byte", "app", app="api\x00"),
    bad("app a number", "app", app=42),
    bad("app missing", "app", app=MISSING),
    bad("team path traversal", "team", team="../etc"),
    bad("team with a space", "team", team="payments team"),
    bad("team url-encoded dots", "team", team="%2e%2e"),
    bad("team fullwidth look-alike", "team", team="ｐａｙｍｅｎｔｓ"),
    bad("team traversal inside", "team", team="payments/../../x"),
    bad("team an array", "team", team=["payments"]),
    bad("class traversal", "class", **{"class": "../preview"}),
    bad("class wrong case", "class", **{"class": "Preview"}),
    bad("region with a newline", "region", region="us-east-1\n"),
    bad("region not in the class", "region", region="eu-central-1"),
    bad("ttl zero", "ttl_hours", ttl_hours=0),
    bad("ttl negative", "ttl_hours", ttl_hours=-1),
    bad("ttl above the class maximum", "ttl_hours", ttl_hours=73),
    bad("ttl a string", "ttl_hours", ttl_hours="24"),
    bad("ttl a fraction", "ttl_hours", ttl_hours=24.5),
    bad("ttl a boolean", "ttl_hours", ttl_hours=True),
    bad("ttl astronomically large", "ttl_hours", ttl_hours=10**30),
    bad("owner empty", "owner", owner=""),
    bad("owner header injection", "owner", owner="alice\nBcc: mallory@example.com"),
    bad("owner too long", "owner", owner="a" * 300),
    bad("repository local file", "repository", repository="file:///etc/passwd"),
    bad("repository with credentials", "repository", repository="https://user:pw@github.com/x/y.git"),
    bad("repository ext transport", "repository", repository="ext::sh -c touch% /tmp/pwned"),
    bad("repository option injection", "repository", repository="--upload-pack=touch /tmp/x"),
    bad("repository plain http", "repository", repository="http://github.com/x/y.git"),
    bad("repository ssh option as user", "repository", repository="ssh://-oProxyCommand@github.com/x"),
    bad("repository scp option as user", "repository", repository="-oProxyCommand@github.com:x/y.git"),
    bad("repository port out of range", "repository", repository="https://github.com:65536/x/y.git"),
    bad("revision shell metacharacters", "revision", revision="main; rm -rf /"),
    bad("revision traversal", "revision", revision="../../etc"),
    bad("revision option injection", "revision", revision="-x"),
    bad("revision newline", "revision", revision="a\nb"),
    bad("revision empty", "revision", revision=""),
    bad("revision bidi override", "revision", revision="main\u202e"),
    bad("revision byte-order mark", "revision", revision="\ufeffmain"),
    bad("revision NEL", "revision", revision="main\u0085"),
    bad("revision command substitution", "revision", revision="$(id)"),
    bad("revision backticks", "revision", revision="`id`"),
    bad("revision pipe", "revision", revision="main|id"),
    bad("label YAML mapping", "labels.tier", labels={"tier": "web: {injected}"}),
    bad("label newline", "labels.tier", labels={"tier": "a\nkind: Secret"}),
    bad("label YAML anchor", "labels.tier", labels={"tier": "&anchor"}),
    bad("label YAML alias", "labels.tier", labels={"tier": "*alias"}),
    bad("label YAML list item", "labels.tier", labels={"tier": "- item"}),
    bad("label YAML comment", "labels.tier", labels={"tier": "#comment"}),
    bad("label value too long", "labels.tier", labels={"tier": "x" * 64}),
    bad("label value unicode", "labels.tier", labels={"tier": "wéb"}),
    bad("label value a number", "labels.tier", labels={"tier": 1}),
    bad("label value an object", "labels.tier", labels={"tier": {"nested": {"deeper": "x"}}}),
    bad("label key with a space", "labels.a b", labels={"a b": "x"}),
    bad(
        "label key reserved prefix",
        "labels.platform.example.com/team",
        labels={"platform.example.com/team": "x"},
    ),
    bad("labels an array", "labels", labels=["a=b"]),
    bad("too many labels", "labels", labels={f"k{i}": "v" for i in range(33)}),
    bad("unknown field", "priority", priority="high"),
    bad("server field status", "status", status="ready"),
    bad("server field id", "id", id="req-0000000000000000"),
    bad("prototype pollution key", "__proto__", __proto__={"admin": True}),
    bad("field name in the wrong case", "Class", Class="production"),
    # The body itself.
    BadInput("huge body", "body", body=create_with(owner="x" * 70_000)),
    BadInput("body an array", "body", content=b"[1, 2, 3]"),
    BadInput("body a string", "body", content=b'"preview"'),
    BadInput("body null", "body", content=b"null"),
    BadInput("body truncated", "body", content=b'{"app": "x",'),
    BadInput("body empty", "body", content=b""),
    BadInput("body nested too deeply", "body", content=b"[" * 50_000),
    BadInput("body number out of range", "body", content=b'{"ttl_hours": 1e400}'),
    BadInput("body invalid utf-8", "body", content=b'{"app": "\xff\xfe"}'),
    BadInput("body lone surrogate", "body", content=b'{"app": "\\ud800"}'),
    # Query parameters and headers.
    BadInput("limit zero", "limit", method="GET", params={"limit": "0"}),
    BadInput("limit not a number", "limit", method="GET", params={"limit": "lots"}),
    BadInput("limit too large", "limit", method="GET", params={"limit": "100000"}),
    BadInput("status filter unknown", "status", method="GET", params={"status": "bogus"}),
    BadInput("team filter traversal", "team", method="GET", params={"team": "../etc"}),
    BadInput("cursor forged", "cursor", method="GET", params={"cursor": "!!!"}),
    BadInput("feed cursor forged", "after", method="GET", path="/v1/events", params={"after": "-1"}),
    BadInput(
        "feed cursor superscript", "after", method="GET", path="/v1/events", params={"after": "\u00b2.1"}
    ),
    BadInput("NUL in a filter", "class", method="GET", params={"class": "pre\x00view"}),
    BadInput("NUL in the list cursor", "cursor", method="GET", params={"cursor": "\x00"}),
    BadInput(
        "NUL in the feed filter",
        "request_id",
        method="GET",
        path="/v1/events",
        params={"request_id": "req-\x00"},
    ),
    BadInput("newline in a class name", "name", method="GET", path="/v1/environment-classes/pre%0Aview"),
    BadInput("NUL in a request id", "request_id", method="GET", path="/v1/environment-requests/req-%00"),
    BadInput(
        "idempotency key too long",
        "Idempotency-Key",
        body=create_with(),
        headers={"Idempotency-Key": "k" * 201},
    ),
    # Extending and rejecting.
    BadInput("extend to zero", "ttl_hours", method="PATCH", body={"ttl_hours": 0}, target="any"),
    BadInput("extend beyond the maximum", "ttl_hours", method="PATCH", body={"ttl_hours": 100}, target="any"),
    BadInput("extend with a string", "ttl_hours", method="PATCH", body={"ttl_hours": "48"}, target="any"),
    BadInput("extend another field", "app", method="PATCH", body={"ttl_hours": 48, "app": "x"}, target="any"),
    BadInput("extend without ttl", "ttl_hours", method="PATCH", body={}, target="any"),
    BadInput(
        "extend If-Match garbage",
        "If-Match",
        method="PATCH",
        body={"ttl_hours": 2},
        target="any",
        headers={"If-Match": "abc"},
    ),
    BadInput("reject without reason", "reason", body={}, target="pending"),
    BadInput("reject empty reason", "reason", body={"reason": ""}, target="pending"),
    BadInput("reject reason a number", "reason", body={"reason": 7}, target="pending"),
    BadInput("reject reason too long", "reason", body={"reason": "x" * 1001}, target="pending"),
    BadInput("reject extra field", "severity", body={"reason": "no", "severity": 1}, target="pending"),
]


@pytest.fixture(scope="module")
def targets(stack: RunningStack, api: httpx.Client) -> dict[str, str]:
    anything = create(api, example("preview", app="bad-input-target"))["id"]
    pending = create(api, example("production", app="bad-input-pending"))["id"]
    stack.wait_for_status(api, pending, {"pending_approval"})
    return {"any": anything, "pending": pending}


def stored_requests(api: httpx.Client) -> int:
    return len(api.get("/v1/environment-requests", params={"limit": 200}).json()["items"])


def test_the_table_is_large_and_names_each_field() -> None:
    assert len(BAD_INPUTS) >= 40
    assert len({case.name for case in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.name for case in BAD_INPUTS])
def test_a_bad_input_is_a_4xx_naming_the_field(
    case: BadInput, api: httpx.Client, approver: httpx.Client, targets: dict[str, str]
) -> None:
    path = case.path
    client = api
    if case.target == "any":
        path = f"/v1/environment-requests/{targets['any']}"
    elif case.target == "pending":
        path = f"/v1/environment-requests/{targets['pending']}/reject"
        client = approver
    before = stored_requests(api) if case.method == "POST" and case.target is None else None
    content = case.content
    if content is None and case.body is not MISSING:
        content = json.dumps(case.body).encode()
    response = client.request(
        case.method,
        path,
        params=case.params,
        content=content,
        headers={"Content-Type": "application/json", **case.headers},
    )
    assert 400 <= response.status_code < 500, f"{case.name}: {response.status_code} {response.text[:300]}"
    assert response.status_code in (400, 422), response.text[:300]
    body = response.json()
    assert body["code"] == "validation"
    assert "Traceback" not in response.text
    fields = {detail.get("field") for detail in body["details"] or []}
    assert case.field in fields, f"{case.name}: {body}"
    assert_written_for_people(body)
    if before is not None:
        assert stored_requests(api) == before
    if case.target == "pending":
        assert (
            api.get(f"/v1/environment-requests/{targets['pending']}").json()["status"] == "pending_approval"
        )


# What a message must not hold: a Python or msgspec value where a person reads a sentence.
NOT_FOR_PEOPLE = re.compile(
    r"Expected `|got `|known: '\w+', |\['\w[^']*', '|\{'\w+': |\bNone\b|=\[|allowed_roles"
)


def assert_written_for_people(body: dict[str, Any]) -> None:
    """The error and every field's message read as sentences, and fields are named as the
    client wrote them (``labels.tier``, never ``body.labels.tier``)."""
    messages = [body["error"], *(str(detail.get("message")) for detail in body["details"] or [])]
    for message in messages:
        assert not NOT_FOR_PEOPLE.search(message), message
    for detail in body["details"] or []:
        assert not str(detail.get("field")).startswith("body."), detail


def test_idempotent_create_over_http(api: httpx.Client) -> None:
    body = example("preview", app="idem")
    headers = {"Idempotency-Key": "deploy-idem-1"}
    first = api.post("/v1/environment-requests", json=body, headers=headers)
    again = api.post("/v1/environment-requests", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = api.post("/v1/environment-requests", json={**body, "ttl_hours": 12}, headers=headers)
    assert changed.status_code == 409
    assert changed.json()["details"][0]["field"] == "Idempotency-Key"
