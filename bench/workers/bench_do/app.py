"""A worker for benchmarks: one counter class, and the same class without storage as a baseline."""
from __future__ import annotations

from typing import Any

from quart import Quart

from durable import DurableObject

app = Quart(__name__)


class BenchCounter(DurableObject):
    async def noop(self) -> None:
        return None

    async def increment(self) -> int:
        value = (await self.ctx.storage.get("n")) or 0
        await self.ctx.storage.put("n", value + 1)
        return value + 1

    async def read(self, key: str) -> Any:
        return await self.ctx.storage.get(key)


class PlainCounter:
    """The same methods on a plain object in memory: the baseline."""

    def __init__(self) -> None:
        self.n = 0

    async def noop(self) -> None:
        return None

    async def increment(self) -> int:
        self.n += 1
        return self.n
