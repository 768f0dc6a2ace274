"""The canonical forms and HMACs of approvals: the client's signature and the attestation.

**Client signature** (header ``X-Platform-Approval-Signature``, compatible with the original
CLI): lowercase hex HMAC-SHA256 with ``PLATFORM_APPROVAL_HMAC_SECRET`` over

    approve:<request_id>:<actor>:<class>

where ``actor`` is the approver as the server resolves it (``GET /v1/whoami``). platformctl
computes it, the approval service verifies it; it is never stored or shown.

**Attestation**: the approval service signs an :class:`~contracts.events.Attestation` for
each accepted approval; git-publisher verifies it again before it publishes anything approval-gated.
Both must build the signed string byte for byte the same way, so it lives here:

    attest:<request_id>:<generation>:<approver>:<class>:<decided_at>

``decided_at`` is rendered in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (a naive datetime is
taken to be UTC already), so an attestation that went through JSON and back (where ``Z``
and ``+00:00`` and dropped microseconds could otherwise differ) still verifies. The
signature is lowercase hex HMAC-SHA256 with ``PLATFORM_ATTESTATION_HMAC_SECRET``, a
server-side key only the approval service and git-publisher hold. It must not be the
approval secret: every approver's CLI holds that one, so with it anyone able to write to
the bus or the approval database could forge an attestation for any approver. (Outside
strict production mode an unset attestation key falls back to the approval secret, so a
development setup needs one secret only.)
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from contracts.events import Attestation


def approval_message(*, request_id: str, actor: str, class_name: str) -> str:
    """The string a client's approval signature covers."""
    return f"approve:{request_id}:{actor}:{class_name}"


def sign_approval(secret: str, *, request_id: str, actor: str, class_name: str) -> str:
    """Lowercase hex HMAC-SHA256 of :func:`approval_message` under ``secret``."""
    message = approval_message(request_id=request_id, actor=actor, class_name=class_name)
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_approval(secret: str, signature: str, *, request_id: str, actor: str, class_name: str) -> bool:
    """True when ``signature`` is the client signature of this approval; constant-time."""
    expected = sign_approval(secret, request_id=request_id, actor=actor, class_name=class_name)
    # Bytes: compare_digest refuses non-ASCII str, and a client may send anything.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass"))


def canonical_time(moment: datetime) -> str:
    """``moment`` in UTC with microseconds and a ``Z`` suffix: one spelling per instant."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def attestation_message(
    *, request_id: str, generation: int, approver: str, class_name: str, decided_at: datetime
) -> str:
    """The string an attestation's signature covers."""
    return f"attest:{request_id}:{generation}:{approver}:{class_name}:{canonical_time(decided_at)}"


def sign_attestation(
    secret: str, *, request_id: str, generation: int, approver: str, class_name: str, decided_at: datetime
) -> str:
    """Lowercase hex HMAC-SHA256 of :func:`attestation_message` under ``secret``."""
    message = attestation_message(
        request_id=request_id,
        generation=generation,
        approver=approver,
        class_name=class_name,
        decided_at=decided_at,
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify_attestation(secret: str, attestation: Attestation) -> bool:
    """True when ``attestation.signature`` was made with ``secret`` over the attestation's own fields.

    The comparison is constant-time. Callers still check that the attestation is about the
    request and class they are publishing: the signature only proves who approved what.
    """
    expected = sign_attestation(
        secret,
        request_id=attestation.request_id,
        generation=attestation.generation,
        approver=attestation.approver,
        class_name=attestation.class_name,
        decided_at=attestation.decided_at,
    )
    # Bytes, not str: compare_digest raises on non-ASCII str, and a forged signature may be anything.
    return hmac.compare_digest(expected.encode(), attestation.signature.encode())
