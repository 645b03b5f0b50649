"""Token allowances: a busy client's rate-limit tokens are spent from a small allowance held here, so
most of its requests skip the call to its RateLimiter object (the larger part of the gateway's
own cost per request).

The object stays the only source of tokens: no more requests pass than its bucket holds, on
one node or many. A client's first request in a while asks for one token, as before; one who
comes back while its allowance lives asks for twice what the last allowance served, up to
`ALLOWANCE_SHARE` of the limit and `MAX_ALLOWANCE`. An allowance is spent for `ALLOWANCE_S` at most, and its
unspent tokens go back with the next ask. A refusal is remembered for as long as the bucket
said it would take to hold a token again, so a client hammering past its limit is answered 429
here without a call per request. What this costs: the client's requests through another node
can find up to an allowance's worth of its tokens held here for that long (and this node keeps
refusing while another gives tokens back), so they may be refused a little early, never let
through late. (Cloudflare's own rate-limiting binding
counts locally and settles with its store in the same spirit.)
"""
from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .limits import Limit

ALLOWANCE_S = 1.0
MAX_ALLOWANCE = 64
ALLOWANCE_SHARE = 0.05
MAX_CLIENTS = 10_000  # allowances kept; the oldest goes first (its unspent tokens with it)


@dataclass(frozen=True, slots=True)
class Quota:
    """What the RateLimit-* headers say after a request spent its token."""

    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as an ASGI server takes them."""
        return [(b"RateLimit-Limit", b"%d" % self.limit), (b"RateLimit-Remaining", b"%d" % self.remaining),
                (b"RateLimit-Reset", b"%d" % self.reset)]


QUOTA_HEADERS = frozenset({b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"})  # by lowercase name


class Refused(Exception):
    """The bucket holds no token: what the 429's headers say (seconds, rounded up)."""

    def __init__(self, limit: int, reset: int, retry_after: int) -> None:
        super().__init__("rate limited")
        self.limit, self.reset, self.retry_after = limit, reset, retry_after

    def headers(self) -> dict[str, str]:
        return {**Quota(self.limit, 0, self.reset).headers(), "Retry-After": str(self.retry_after)}


TakeFromBucket = Callable[[int, float, int, int], Awaitable[dict[str, Any]]]  # RateLimiter.take


@dataclass(slots=True)
class Allowance:
    tokens: int = 0  # granted to this node, not spent yet
    until: float = 0.0  # when they may no longer be spent (monotonic)
    remaining: int = 0  # what the bucket held after the last grant
    served: int = 0  # requests spent from what the last grant brought
    refused_until: float = 0.0  # the bucket held no token; none before this (monotonic)
    full_at: float = 0.0  # ... and would be full again then


class TokenAllowances:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._allowances: dict[str, Allowance] = {}

    def spend(self, key: str, limit: Limit) -> Quota | None:
        """One token from the allowance of `key`, if it holds one still valid; else None: ask()."""
        allowance = self._allowances.get(key)
        if allowance is None or allowance.tokens < 1 or self._clock() >= allowance.until:
            return None
        allowance.tokens -= 1
        allowance.served += 1
        return _quota(limit, allowance)

    async def take(self, key: str, limit: Limit, take_from_bucket: TakeFromBucket) -> Quota:
        """When spend() found nothing: one token (and maybe an allowance) from the bucket itself, or Refused."""
        allowance = self._allowances.get(key)
        if allowance is not None and self._clock() < allowance.refused_until:
            raise _refused(limit, allowance, self._clock())
        want, returning = self.ask(key, limit)
        result = await take_from_bucket(limit.limit, limit.period_s, want, returning)
        quota = self.settle(key, limit, result) or self.spend(key, limit)  # (another's grant may have come)
        if quota is None:
            raise _refused(limit, self._allowances[key], self._clock())
        return quota

    def ask(self, key: str, limit: Limit) -> tuple[int, int]:
        """(want, returning) for the object's `take`: the allowance's unspent tokens go back with it."""
        allowance = self._allowances.get(key)
        if allowance is None:
            return 1, 0
        returning, allowance.tokens = allowance.tokens, 0
        if self._clock() >= allowance.until + ALLOWANCE_S:  # quiet for a while: start small again
            return 1, returning
        cap = max(1, min(MAX_ALLOWANCE, int(limit.limit * ALLOWANCE_SHARE)))
        return min(cap, 2 * max(1, allowance.served)), returning

    def settle(self, key: str, limit: Limit, result: dict[str, Any]) -> Quota | None:
        """Keep what `take` granted beyond this request's token; None when it granted nothing."""
        allowance = self._allowances.pop(key, None) or Allowance()
        self._allowances[key] = allowance  # (re)inserted last: the dict's order is the allowances' age
        if len(self._allowances) > MAX_CLIENTS:
            del self._allowances[next(iter(self._allowances))]
        granted = int(result["granted"])
        allowance.remaining = int(result["remaining"])
        if granted < 1:
            now = self._clock()  # (the answer's trip here only shortens what is remembered)
            allowance.refused_until = now + float(result["next_token_s"])
            allowance.full_at = now + float(result["reset"])
            return None
        allowance.tokens += granted - 1
        allowance.served = 1
        allowance.until = self._clock() + ALLOWANCE_S
        return _quota(limit, allowance)


def _refused(limit: Limit, allowance: Allowance, now: float) -> Refused:
    return Refused(limit.limit, max(1, math.ceil(allowance.full_at - now)), max(1, math.ceil(allowance.refused_until - now)))


def _quota(limit: Limit, allowance: Allowance) -> Quota:
    remaining = min(limit.limit, allowance.remaining + allowance.tokens)
    return Quota(limit.limit, remaining, math.ceil((limit.limit - remaining) * limit.period_s / limit.limit))
