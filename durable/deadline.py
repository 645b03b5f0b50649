"""A request's deadline, carried with it wherever it goes.

A request comes in with a budget (the worker's `REQUEST_TIMEOUT_S`, or less when the caller
said how long it will wait: `rpc.wire.DEADLINE_HEADER`, as gRPC carries `grpc-timeout`;
the gateway drops a client's own, and sets what its forward has left).
Every call it makes on the way (an object call to another process, a service binding, a
database command) is bounded by what is left of that budget, so a peer that went silent costs a
request its own budget at most, never an unbounded wait. The deadline lives in a context
variable, so it follows the request into the tasks it starts.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar

import pymongo

from .rpc.wire import DEADLINE_HEADER

DEFAULT_BUDGET_S = 30.0
MIN_BUDGET_S = 0.05  # a call is never sent with less: it would fail before it could be answered
RETURN_MARGIN_S = 0.25

_at: ContextVar[float | None] = ContextVar("durable_deadline", default=None)


def remaining(default: float = DEFAULT_BUDGET_S) -> float:
    """Seconds left before the current request's deadline (`default` outside any request)."""
    at = _at.get()
    if at is None:
        return default
    return max(at - time.monotonic(), 0.0)


def expired() -> bool:
    at = _at.get()
    return at is not None and time.monotonic() >= at


def outgoing() -> dict[str, str]:
    """The header that tells a callee how long this caller will wait, less a margin for the
    answer's way back, so the callee gives up (and says so) before the caller does."""
    at = _at.get()
    if at is None:
        return {}
    left = at - time.monotonic()
    left -= min(RETURN_MARGIN_S, left / 10)
    return {DEADLINE_HEADER: str(max(int(left * 1000), int(MIN_BUDGET_S * 1000)))}


def budget_from(headers: Mapping[str, str], default_s: float) -> float:
    """The budget of an incoming call: the caller's, if it named a smaller one than ours."""
    raw = headers.get(DEADLINE_HEADER)
    if raw is None:
        return default_s
    try:
        asked = int(raw) / 1000
    except ValueError:
        return default_s
    return min(max(asked, MIN_BUDGET_S), default_s)


class within:  # noqa: N801 (used as a function: `with deadline.within(budget_s):`)
    """Run the block with at most `budget_s` left (never more than an enclosing deadline gives).
    A class, not a generator: it opens every request, and a generator's context manager costs
    three times as much."""

    __slots__ = ("at", "token")

    def __init__(self, budget_s: float) -> None:
        self.at = time.monotonic() + budget_s

    def __enter__(self) -> None:
        outer = _at.get()
        self.token = _at.set(self.at if outer is None else min(self.at, outer))

    def __exit__(self, *exc: object) -> None:
        _at.reset(self.token)


def database(cap_s: float) -> AbstractContextManager[object]:
    """Bound the database commands of the block (pymongo's client-side operation timeout) by
    what the request has left, and by `cap_s` in any case. Applied where commands are sent, not
    for a whole request: pymongo's timeout also replaces the client's server selection timeout,
    so a request-long one would make a database that is down cost the whole budget, not `cap_s`."""
    return pymongo.timeout(max(min(remaining(cap_s), cap_s), MIN_BUDGET_S))
