"""Per-object concurrency: Cloudflare's input gate, in asyncio terms.

Storage calls never suspend the event loop (reads are served from cache or a synchronous
SQLite read, writes are staged in memory), so code between two non-storage awaits already runs
without interleaving. The gate adds the explicit part: `block_concurrency_while` and
transactions hold it exclusively, and no new event is delivered to the object meanwhile.
Calls made through runtime bindings (stubs, service bindings) also wait for the gate before
resuming, so a blocker is not overtaken by an event that was waiting on the network.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

# Gates the current task holds exclusively (nested holders pass straight through).
_held: ContextVar[frozenset[int]] = ContextVar("durable_gates_held", default=frozenset())


class InputGate:
    """Open unless an exclusive section (blocker or transaction) of this object is running."""

    __slots__ = ("_closed", "_opened")

    def __init__(self) -> None:
        self._closed = False
        self._opened: asyncio.Event | None = None  # made the first time the gate closes (most never do)

    @property
    def closed(self) -> bool:
        return self._closed

    def held_here(self) -> bool:
        return id(self) in _held.get()

    async def enter(self) -> None:
        """Wait until an event may be delivered (or resumed) in this object."""
        while self._closed and not self.held_here():
            assert self._opened is not None
            await self._opened.wait()

    def close_now(self) -> None:
        """Close synchronously; the caller must `reopen()` (used from constructors)."""
        self._closed = True
        if self._opened is None:
            self._opened = asyncio.Event()
        else:
            self._opened.clear()

    def reopen(self) -> None:
        self._closed = False
        if self._opened is not None:
            self._opened.set()

    def mark_held(self) -> None:
        """Mark the current context as the holder (call inside the holding task)."""
        _held.set(_held.get() | {id(self)})

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        if self.held_here():
            yield
            return
        await self.enter()
        self.close_now()
        token = _held.set(_held.get() | {id(self)})
        try:
            yield
        finally:
            _held.reset(token)
            self.reopen()
