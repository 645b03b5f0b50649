"""A coroutine object that drives another by hand: what a task needs from a coroutine (send,
throw, close, await), with each kind deciding what a step does (`objects/trampoline._Resumed`
hands over a first step already taken; `observe.metrics.TimedSteps` times each step)."""
from __future__ import annotations

import collections.abc
from typing import Any


class Driving(collections.abc.Coroutine):  # type: ignore[type-arg]
    """The part every such coroutine shares; `send` and `throw` are each kind's own."""

    __slots__ = ("coro",)

    def __init__(self, coro: Any) -> None:
        self.coro = coro

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)
