"""A dependency's state for a probe: the check runs in the background and a probe reads what it
last found, waiting at most a moment for a check in flight. So `/health` answers within its
budget whether the dependency is up, down or silent (a hung check is still reported: as the last
state seen, with its age), and a burst of probes makes one check, not one each."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LastKnown(Generic[T]):
    def __init__(self, check: Callable[[], Awaitable[T]]) -> None:
        self._check = check
        self._task: asyncio.Task[None] | None = None
        self.value: T | None = None
        self.checked_at: float | None = None  # monotonic

    async def _run(self) -> None:
        self.value = await self._check()
        self.checked_at = time.monotonic()

    async def read(self, wait_s: float) -> tuple[T | None, float | None]:
        """(what the last finished check found, its age in seconds); None before any has finished.
        Starts a check unless one is in flight, and waits for it at most `wait_s`."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(asyncio.shield(self._task), wait_s)
        except asyncio.TimeoutError:
            pass
        except Exception:  # noqa: BLE001 (the check's own failure: the last state stands)
            pass
        age = None if self.checked_at is None else round(time.monotonic() - self.checked_at, 3)
        return self.value, age

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    @staticmethod
    def reported(value: dict[str, Any] | None, age_s: float | None, unknown: dict[str, Any]) -> dict[str, Any]:
        """A report for a probe: the last state with its age, or `unknown` before any check ended."""
        return unknown if value is None else {**value, "checkedAgoS": age_s}
