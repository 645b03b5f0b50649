"""Waiting for a condition that another task or process makes true (never a fixed sleep)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll the async `check()` until it returns something truthy, or its last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)


def wait_until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll the plain `check()` (another process makes it true) until it returns something
    truthy, or its last value at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return check()


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    """`eventually`, for a condition the test needs: fail, naming `what`, at the deadline."""
    result = await eventually(check, timeout_s, interval=0.1)
    assert result, f"timed out waiting for {what}"
    return result


def recovers(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """`wait_until`, for the shop recovering by itself: fail if it never does."""
    found = wait_until(check, timeout_s, interval=0.1)
    assert found, "it never recovered"
    return found
