"""Rate limits: how often one caller, and one team, may change things.

A token bucket per key: it holds at most ``per_minute`` tokens, refills at ``per_minute``
a minute, and each counted request takes one. So a caller may send a burst of up to
``per_minute`` requests at once and then ``per_minute / 60`` a second; a request that
finds the bucket empty is refused with the time until the next token (``Retry-After``).

The buckets live in the gateway process: each replica limits what reaches it (see
docs/security.md "Quotas and rate limits"). Keys whose bucket has refilled completely carry no
information (a new bucket is full too) and are dropped when the table grows, so memory
stays bounded by the callers active in the last minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.models import Actor
from contracts.roles import acts_for
from services.gateway.domain.errors import RateLimited

# Past this many keys, full buckets are dropped (a pass over the table, amortised over as
# many requests as the table then holds).
PRUNE_AT = 10_000


@dataclass
class TokenBuckets:
    """One bucket per key; ``per_minute`` 0 turns the limit off."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)
    _prune_at: int = PRUNE_AT

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60.0)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when there was one, else the seconds until there is."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * 60.0 / self.per_minute
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._prune_at:
            self._prune(now)
        return 0.0

    def give_back(self, key: str) -> None:
        """Return the token a request took that in the end did nothing worth counting."""
        if self.enabled and key in self._buckets:
            tokens, at = self._buckets[key]
            self._buckets[key] = (min(float(self.per_minute), tokens + 1.0), at)

    def _prune(self, now: float) -> None:
        full = float(self.per_minute)
        self._buckets = {key: state for key, state in self._buckets.items() if self._tokens(key, now) < full}
        self._prune_at = max(PRUNE_AT, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass
class RateLimits:
    """The gateway's limits on what callers change.

    - ``per_subject``: every change (``POST``, ``PUT``, ``PATCH``, ``DELETE``) of one caller;
    - ``generations_per_subject``: the changes of one caller that make a new generation, so a
      commit and work for every service: creates and reconciles;
    - ``per_team``: the environment requests created for one team, whoever sends them.

    Only what the platform goes on to do is counted: a create or reconcile refused (by the
    gateway, intake or policy's validation) or answered from an earlier one (an idempotent
    replay) gives its tokens back, so neither a caller's mistakes nor a flood of refused
    requests uses up a team's allowance.
    """

    per_subject: TokenBuckets
    generations_per_subject: TokenBuckets
    per_team: TokenBuckets

    @classmethod
    def per_minute(cls, *, subject: int, generations: int, team: int) -> RateLimits:
        return cls(TokenBuckets(subject), TokenBuckets(generations), TokenBuckets(team))

    def count_change(self, subject: str, actor: str) -> None:
        """Count a change by ``subject``; :class:`RateLimited` when it is over its limit."""
        _take_or_refuse(self.per_subject, subject, f"too many changes from {actor}", "subject")

    def count_generation(self, actor: Actor) -> None:
        """Count a reconcile (or the caller's part of a create); :class:`RateLimited` when over."""
        try:
            _take_or_refuse(
                self.generations_per_subject,
                actor.subject,
                f"too many creates and reconciles from {actor.actor}",
                "generations",
            )
        except RateLimited:
            self.per_subject.give_back(actor.subject)
            raise

    def give_back_generation(self, actor: Actor) -> None:
        self.generations_per_subject.give_back(actor.subject)

    def count_create(self, actor: Actor, team: str) -> None:
        """Count an environment request of ``actor`` for ``team``: against the team's limit
        and the caller's generations; :class:`RateLimited` (and nothing counted) when over one.

        A create for a team the caller does not act for is not counted against the team:
        intake refuses it, and it must not use up that team's allowance.
        """
        counts_for_team = acts_for(actor, team)
        if counts_for_team:
            try:
                _take_or_refuse(self.per_team, team, f"too many environment requests for team {team}", "team")
            except RateLimited:
                self.per_subject.give_back(actor.subject)
                raise
        try:
            self.count_generation(actor)
        except RateLimited:
            if counts_for_team:
                self.per_team.give_back(team)
            raise

    def give_back_create(self, actor: Actor, team: str) -> None:
        """The create did not make a request (refused, or an idempotent replay): return its tokens."""
        if acts_for(actor, team):
            self.per_team.give_back(team)
        self.give_back_generation(actor)


def _take_or_refuse(buckets: TokenBuckets, key: str, what: str, limit: str) -> None:
    """Take a token of ``key``, or raise :class:`RateLimited` saying ``what`` and when to retry."""
    wait = buckets.take(key)
    if wait:
        raise RateLimited(
            f"{what}: at most {buckets.per_minute} a minute",
            limit=limit,
            per_minute=buckets.per_minute,
            retry_after_seconds=wait,
        )
