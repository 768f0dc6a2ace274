"""The roles a bearer token can carry (the ``role`` claim by default).

Shared by the gateway, which authorizes with them, and by the tools that mint or check
tokens (``platformctl token mint``), so both know the same four names. What each role
may do is the gateway's business (``services/gateway/domain/roles.py``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    VIEWER = "viewer"
    REQUESTER = "requester"
    APPROVER = "approver"
    ADMIN = "admin"


# Least privileged first, as the role matrix reads.
ROLE_NAMES: Final[tuple[str, ...]] = tuple(role.value for role in Role)
