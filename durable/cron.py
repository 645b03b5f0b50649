"""Cron triggers: each worker's `triggers.crons` run its scheduled handler on time.

One task per worker sleeps until the next due time of any of its expressions (UTC, as
Cloudflare's), then runs every expression due then. In a cluster exactly one live node fires a
worker's crons: the one rendezvous places the worker's cron key on, so adding nodes never
multiplies the runs and a dead node's crons move with its placement.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from croniter import croniter

log = logging.getLogger("durable.cron")


def next_due(expressions: list[str], after: float) -> tuple[float, list[str]]:
    """The next time (epoch seconds) any expression is due after `after`, and which are due then."""
    start = datetime.fromtimestamp(after, tz=timezone.utc)
    times = {expr: croniter(expr, start).get_next(float) for expr in expressions}
    soonest = min(times.values())
    return soonest, [expr for expr, at in times.items() if at == soonest]


async def run_crons(worker: Any, fires_here: Callable[[], bool] = lambda: True, *,
                    clock: Callable[[], float] = time.time,
                    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Forever: wait for the next due time, then run the due expressions' scheduled events."""
    expressions = list(worker.config.triggers.crons)
    after = clock()
    while True:
        due, which = next_due(expressions, after)
        await sleep(max(0.0, due - clock()))
        after = due
        if not fires_here():
            continue
        for expression in which:
            try:
                await worker.scheduled(expression, int(due * 1000))
            except Exception:  # never let one run stop the schedule
                log.exception("%s: cron %r failed", worker.name, expression)
