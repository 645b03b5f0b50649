"""Request correlation: a W3C `traceparent` and an `X-Request-Id` for every event.

The first worker a request reaches accepts the client's (when well formed) or makes new ones;
the runtime carries them on every service binding fetch and Durable Object call made while
handling it, in this process (a context variable) and over HTTP (the same two headers), and
puts them in every trace event and access-log line.
"""
from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
SCOPE_KEY = "durable.trace"  # the caller's context, on the ASGI scope of a call within the process
# Trace, span and request ids (and signature nonces) must be unique, not secret: a PRNG seeded
# from the OS per process, reseeded in a forked child, costs a tenth of os.urandom per id, and
# ids are made several times per request.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def random_id(digits: int) -> str:
    """`digits` random hex digits, never all zeros."""
    value = _ids.getrandbits(digits * 4)
    return f"{value or 1:0{digits}x}"  # all zeros is the invalid id of W3C trace context


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str  # this hop's span: the parent-id of the calls it makes
    flags: str
    request_id: str
    parent_id: str = ""  # the caller's span (none for the first hop of a trace)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def outgoing(self) -> dict[str, str]:
        """Headers for a call made from this hop: same trace and request id, this hop as parent."""
        return {"traceparent": self.traceparent, "x-request-id": self.request_id}

    def child(self) -> TraceContext:
        """The context of a hop called from this one: same trace and request id, its own span."""
        return TraceContext(self.trace_id, random_id(16), self.flags, self.request_id, self.span_id)

    def sampled_as(self, sampled: bool) -> TraceContext:
        """The same hop with the sampler's decision in its flags: the hops after it follow it."""
        flags = "01" if sampled else "00"
        if flags == self.flags:
            return self
        return TraceContext(self.trace_id, self.span_id, flags, self.request_id, self.parent_id)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> TraceContext:
        """Continue the caller's trace (a new span of it), or start one; keep a sane request id."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        found = {k.lower(): v for k, v in items if k.lower() in ("traceparent", "x-request-id")}
        return cls._continue(found.get("traceparent", ""), found.get("x-request-id", ""))

    @classmethod
    def of_caller(cls, headers: Mapping[str, str]) -> TraceContext:
        """The caller's own hop, from the headers of a call that only relays to an object (the
        internal route): the object's invocation is then the caller's child, not a grandchild."""
        hop = cls.from_headers(headers)
        return cls(hop.trace_id, hop.parent_id, hop.flags, hop.request_id) if hop.parent_id else hop

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> TraceContext:
        """`from_headers` of an ASGI request, read straight from its (lowercase, bytes) headers:
        it runs once per request per hop. A call within the process hands over its context itself."""
        caller = scope.get(SCOPE_KEY)
        if caller is not None:
            return caller.child()
        parent = request_id = b""
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                parent = value
            elif name == b"x-request-id":
                request_id = value
        return cls._continue(parent.decode("latin-1"), request_id.decode("latin-1"))

    @classmethod
    def _continue(cls, parent: str, request_id: str) -> TraceContext:
        match = _TRACEPARENT.match(parent.strip().lower()) if parent else None
        request_id = request_id.strip()
        if not _REQUEST_ID.match(request_id):
            request_id = random_id(32)
        if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
            return cls(match.group(1), random_id(16), match.group(3), request_id, match.group(2))
        return cls(random_id(32), random_id(16), "01", request_id)


_current: ContextVar[TraceContext | None] = ContextVar("durable_trace_context", default=None)


def current() -> TraceContext | None:
    return _current.get()


def use(context: TraceContext) -> object:
    """Make `context` current for this task (and tasks it starts); returns a reset token."""
    return _current.set(context)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
