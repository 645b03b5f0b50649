"""The CPU time per request of /metrics: the event-loop steps run in the request's context (its
own coroutine's and those of the tasks it starts, as Quart starts one for each handler), never
the time it waited; a worker called in process and a Durable Object event count their own, not
their caller's. Timed here with the thread CPU clock (DURABLE_CPU_CLOCK=thread), so the bounds
hold on a busy machine; the default clock is checked for what it must never count: waiting."""
from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable
from typing import Any

import pytest
import uvloop

from durable.objects import detached
from durable.observe import metrics
from durable.observe.metrics import (
    CpuMeter,
    meter_loop_steps,
    meter_task_steps,
    start_metering,
    stop_metering,
    timed,
)


@pytest.fixture(autouse=True)
def steps_timed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    meter_loop_steps()
    if "default_clock" not in request.node.name:
        monkeypatch.setattr(metrics, "_clock", time.thread_time)


def spin(seconds: float) -> None:
    """Use `seconds` of this thread's CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def metered(work: Awaitable[Any]) -> CpuMeter:
    """As the runtime serves a request: metered from its start to its answer."""
    meter_task_steps(asyncio.get_running_loop())
    meter, token = start_metering()
    try:
        await timed(work, meter)
    finally:
        stop_metering(meter, token)
    return meter


async def works_then_waits() -> str:
    spin(0.03)
    await asyncio.sleep(0.2)  # waiting: no CPU
    spin(0.02)
    return "done"


async def test_a_request_is_charged_its_steps_not_its_waits() -> None:
    started = time.perf_counter()
    meter = await metered(works_then_waits())
    assert time.perf_counter() - started >= 0.2
    assert 0.05 <= meter.cpu_s < 0.05 + 0.02  # the two spins, plus the meter's own few microseconds


async def test_other_tasks_running_meanwhile_are_not_charged() -> None:
    async def neighbour() -> None:
        await asyncio.sleep(0.01)
        spin(0.1)  # runs while the metered request waits

    other = asyncio.ensure_future(neighbour())
    meter = await metered(works_then_waits())
    await other
    assert meter.cpu_s < 0.05 + 0.02


async def test_a_worker_called_in_process_counts_its_own_steps_only() -> None:
    inner_meters: list[CpuMeter] = []

    async def inner() -> None:
        spin(0.04)
        await asyncio.sleep(0.01)
        spin(0.01)

    async def outer() -> None:
        spin(0.02)
        inner_meters.append(await metered(inner()))  # a request of its own, made while the outer runs
        spin(0.01)

    meter = await metered(outer())
    assert 0.05 <= inner_meters[0].cpu_s < 0.07
    assert 0.03 <= meter.cpu_s < 0.05  # its own 30 ms, not the 50 ms of the worker it called


async def test_an_error_still_charges_the_step_that_raised() -> None:
    async def fails() -> None:
        spin(0.02)
        raise ValueError("boom")

    meter, token = start_metering()
    try:
        await fails()
    except ValueError:
        pass
    finally:
        stop_metering(meter, token)
    assert meter.cpu_s >= 0.02


async def test_tasks_a_request_starts_are_its_cpu_too() -> None:
    """Quart runs each handler in a task of its own: its CPU is the request's."""
    async def handler() -> None:
        spin(0.03)
        await asyncio.sleep(0.05)
        spin(0.02)

    async def app() -> None:
        await asyncio.ensure_future(handler())  # the framework's task; the app itself only waits

    meter = await metered(app())
    assert 0.05 <= meter.cpu_s < 0.07


async def test_the_default_clock_never_counts_the_waits_either() -> None:
    async def waits() -> None:
        await asyncio.sleep(0.3)
        await asyncio.sleep(0.3)

    meter = await metered(waits())
    assert meter.cpu_s < 0.1  # 0.6 s of waiting: the steps around the waits are microseconds


@pytest.mark.parametrize("waits", [False, True])
async def test_a_durable_object_event_is_its_own_cpu_not_the_calling_request_s(waits: bool) -> None:
    """Whether the event finishes at once or waits, starts tasks or calls another worker in
    process: none of its CPU is the request's (on Cloudflare an object's CPU time is its own)."""
    async def helper() -> None:
        spin(0.02)

    async def another_worker() -> None:
        spin(0.02)
        await asyncio.sleep(0.01)
        spin(0.02)

    async def event() -> None:
        spin(0.03)
        if waits:
            await asyncio.sleep(0.01)
            spin(0.03)
            await asyncio.ensure_future(helper())
            await metered(another_worker())

    async def request() -> None:
        spin(0.01)
        await detached(event())
        spin(0.01)

    meter = await metered(request())
    assert 0.02 <= meter.cpu_s < 0.03


@pytest.mark.parametrize("case", [
    test_a_request_is_charged_its_steps_not_its_waits,
    test_other_tasks_running_meanwhile_are_not_charged,
    test_a_worker_called_in_process_counts_its_own_steps_only,
    test_an_error_still_charges_the_step_that_raised,
    test_tasks_a_request_starts_are_its_cpu_too,
    test_the_default_clock_never_counts_the_waits_either,
    functools.partial(test_a_durable_object_event_is_its_own_cpu_not_the_calling_request_s, waits=False),
    functools.partial(test_a_durable_object_event_is_its_own_cpu_not_the_calling_request_s, waits=True),
], ids=lambda case: getattr(case, "__name__", None) or f"object_event_waits_{case.keywords['waits']}")
def test_the_same_on_uvloop(case: Any) -> None:
    """The worker processes' loop: its compiled handles cannot be timed, so the request's
    coroutine and the tasks made in its context time their own steps (`timed`)."""
    uvloop.run(case())
