"""Kubernetes naming and label syntax (pure functions, shared by validation and rendering).

``re.fullmatch`` with ASCII-only classes: ``$`` alone would accept a trailing newline, and
``\\w`` would accept unicode look-alikes.
"""

from __future__ import annotations

import re

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def is_dns1123_label(value: str, max_length: int = 63) -> bool:
    return len(value) <= max_length and DNS1123_LABEL.fullmatch(value) is not None


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or DNS1123_SUBDOMAIN.fullmatch(prefix) is None):
        return "label key prefix must be a DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or LABEL_NAME.fullmatch(name) is None:
        return (
            "label key name must be 1-63 characters: letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63 or LABEL_NAME.fullmatch(value) is None:
        return (
            "label value must be at most 63 characters: letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None
