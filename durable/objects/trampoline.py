"""`detached`: run an object's event as its own task would, without paying for one when the
event never waits (most don't)."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextvars import copy_context
from typing import Any

from ..coroutines import Driving
from ..observe import metrics


async def detached(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` as a task of its own would (its own copy of the context; the caller's
    cancellation stops the waiting, not the work), but start it at once: most object events
    never wait, and then they finish without a task, a shield or two turns of the loop."""
    context = copy_context()
    own = metrics.apart(context)  # with a request metered: the event's CPU is its own, not the request's
    if own is not None:
        metrics.enter(own)
    try:
        first = context.run(coro.send, None)
    except StopIteration as done:
        return done.value
    finally:
        if own is not None:
            metrics.leave(own)
    task = asyncio.get_running_loop().create_task(_Resumed(coro, first), context=context)
    return await asyncio.shield(task)


class _Resumed(Driving):
    """A coroutine that was started by hand and yielded `first` (what an asyncio future yields
    to the task driving it), handed to a task to drive from there. Anything thrown in, even
    before the task's first step (a cancellation), reaches the coroutine where it waits."""

    __slots__ = ("first",)

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        super().__init__(coro)
        self.first = first

    def send(self, value: Any) -> Any:
        if self.first is not _TAKEN:
            first, self.first = self.first, _TAKEN
            return first
        return self.coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self.first = _TAKEN
        return self.coro.throw(*exc)


_TAKEN = object()
