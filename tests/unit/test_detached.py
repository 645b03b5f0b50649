"""`detached`, which runs every object event: started at once, it must still behave as a task of
its own would (own context, immune to the caller's cancellation, errors passed on)."""
from __future__ import annotations

import asyncio
from contextvars import ContextVar

import pytest

from durable.objects import detached

marker: ContextVar[str] = ContextVar("marker", default="caller")


async def sets_marker_and_returns(value: str) -> str:
    marker.set(value)
    return marker.get()


async def test_work_that_never_waits_returns_at_once_in_a_context_of_its_own() -> None:
    assert await detached(sets_marker_and_returns("object")) == "object"
    assert marker.get() == "caller"  # the object's context variables stay with the object


async def test_work_that_waits_keeps_its_context_across_the_wait() -> None:
    gate = asyncio.get_running_loop().create_future()

    async def waits() -> str:
        marker.set("object")
        await gate
        return marker.get()

    call = asyncio.ensure_future(detached(waits()))
    await asyncio.sleep(0)
    gate.set_result(None)
    assert await call == "object" and marker.get() == "caller"


async def test_a_cancelled_caller_stops_waiting_but_the_work_runs_to_its_end() -> None:
    gate = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def work() -> None:
        await gate
        finished.set()

    call = asyncio.ensure_future(detached(work()))
    await asyncio.sleep(0)  # started: now suspended on the gate
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    gate.set_result(None)
    await asyncio.wait_for(finished.wait(), 5)


@pytest.mark.parametrize("waits_first", [False, True])
async def test_errors_reach_the_caller_whether_or_not_the_work_waited(waits_first: bool) -> None:
    async def fails() -> None:
        if waits_first:
            await asyncio.sleep(0)
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        await detached(fails())


async def test_a_cancellation_of_the_work_itself_reaches_it_where_it_waits() -> None:
    seen: list[str] = []

    async def waits_forever() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never set
        except asyncio.CancelledError:
            seen.append("cancelled where it waited")
            raise

    before = asyncio.all_tasks()
    call = asyncio.ensure_future(detached(waits_forever()))
    await asyncio.sleep(0)
    (work,) = asyncio.all_tasks() - before - {call}  # the task that took over once it waited
    work.cancel()  # as at shutdown
    with pytest.raises(asyncio.CancelledError):
        await call
    assert seen == ["cancelled where it waited"]
