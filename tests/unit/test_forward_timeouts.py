"""The gateway's forward timeouts: one ticker instead of a timer per request, and asyncio.timeout's
semantics (a TimeoutError for ours, someone else's cancellation left alone)."""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.timeouts import ForwardTimeouts


async def test_work_done_in_time_is_untouched_and_the_ticker_stops_when_idle() -> None:
    timeouts = ForwardTimeouts(0.2)
    with timeouts.watch():
        await asyncio.sleep(0)
    assert timeouts._ticker is not None  # it runs while anything was watched ...
    await asyncio.wait_for(asyncio.shield(timeouts._ticker), 5)
    assert timeouts._ticker is None  # ... and ends once nothing is


async def test_work_past_its_deadline_gets_a_timeout_error_and_the_task_is_not_left_cancelled() -> None:
    timeouts = ForwardTimeouts(0.1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        with timeouts.watch():
            await asyncio.Event().wait()  # never set
    waited = time.monotonic() - started
    assert 0.1 <= waited < 5
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and it is not cancelled later either


async def test_someone_elses_cancellation_stays_a_cancellation() -> None:
    timeouts = ForwardTimeouts(30)
    entered = asyncio.Event()

    async def forward() -> None:
        with timeouts.watch():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(forward())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not timeouts._watched


async def test_a_cancellation_swallowed_inside_is_taken_back_when_the_deadline_was_ours() -> None:
    timeouts = ForwardTimeouts(0.1)

    async def forward() -> str:
        with timeouts.watch():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # e.g. a handler that cleans up and returns
        task = asyncio.current_task()
        assert task is not None
        return f"cancelling={task.cancelling()}"

    assert await asyncio.wait_for(forward(), 5) == "cancelling=0"


# -- a request's deadline, carried into the calls it makes (durable.deadline) -----------------
