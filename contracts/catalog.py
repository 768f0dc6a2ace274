"""The names services answer to on the bus, and NATS subject matching.

Who publishes and who consumes each event is not written here: each service declares it
beside its handlers (``services/<service>/entrypoints/bus.py``) and
``services/tools/topology.py`` reads the declarations.
"""

from __future__ import annotations

from typing import Final

# The services on the bus, in pipeline order: the envelope's ``source``, the ``<service>``
# of their RPC subjects and of their durables (``<service>-<name>``). Read at run time where
# the services' declarations cannot be imported (the gateway pings each one, intake's
# anti-entropy watches their durables); a test holds it to the declarations.
SERVICES: Final[tuple[str, ...]] = (
    "intake",
    "policy",
    "approval",
    "renderer",
    "git_publisher",
    "cluster_bootstrapper",
)

# The platform's durable consumers (``<service>-<name>``), what intake's anti-entropy waits for
# (``libs.bus.StreamBacklog``): a downstream tool's durable named ``intake-tap`` is not one of
# them. A test holds it to the declarations.
DURABLES: Final[tuple[str, ...]] = (
    "intake-classes",
    "intake-requests",
    "policy-evaluate",
    "policy-rejections",
    "policy-teardowns",
    "approval-decisions",
    "renderer-reconcile",
    "git-publisher-requests",
    "cluster-bootstrapper-published",
    "cluster-bootstrapper-unpublished",
)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches exactly one token, a final ``>`` one or more."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, part in enumerate(pattern_tokens):
        if part == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or part not in ("*", subject_tokens[index]):
            return False
    return len(pattern_tokens) == len(subject_tokens)
