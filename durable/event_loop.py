"""The event loop a worker process runs on: uvloop where it is installed, asyncio's otherwise.

uvloop's sockets and callbacks cost less per request (ARCHITECTURE.md, "The HTTP server");
`DURABLE_EVENT_LOOP=asyncio` picks the standard loop, to compare or to rule uvloop out.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICE_ENV = "DURABLE_EVENT_LOOP"


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop unless `choice` (by default the environment's) is "asyncio" (None: asyncio's)."""
    if (choice or os.environ.get(CHOICE_ENV, "uvloop")) == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str | None = None) -> T:
    """`asyncio.run` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
