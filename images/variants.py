"""Making a variant: once per key in a process however many ask at once (and whoever of them
gives up), within a pool slot and the source's budget of new variants for the day, kept in the
bucket before it is answered."""
from __future__ import annotations

import asyncio
import datetime as dt
import time

from durable import env
from durable.r2 import R2Bucket, R2Object, R2ObjectBody
from web.errors import ApiError

from . import library, metrics
from .options import Transform, TransformError
from .pool import ResizePool
from .render import MEDIA_TYPES, render

_making: dict[str, asyncio.Task[R2Object]] = {}  # variants being made in this process, by key


async def make(bucket: R2Bucket, pool: ResizePool, source: str, key: str, chosen: Transform,
               limits: dict[str, int]) -> R2Object:
    """The variant `key` of `source`, made now (or by whoever in this process started it first).
    The work is a task of its own: a requester that goes away cancels only its own wait."""
    task = _making.get(key)
    if task is None:
        task = _making[key] = asyncio.ensure_future(_render_and_keep(bucket, pool, source, key, chosen, limits))
        task.add_done_callback(lambda done: _making.pop(key, None))
    return await asyncio.shield(task)


def _until_midnight(now: dt.datetime) -> int:
    tomorrow = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((tomorrow - now).total_seconds()) + 1


async def _render_and_keep(bucket: R2Bucket, pool: ResizePool, source: str, key: str, chosen: Transform,
                           limits: dict[str, int]) -> R2Object:
    with pool.slot():  # a busy pool refuses before the budget is spent or the source read
        today = dt.datetime.now(dt.UTC)
        budgets = env.VARIANT_BUDGET
        budget = limits["VARIANTS_PER_SOURCE_PER_DAY"]
        if not await budgets.get(budgets.idFromName(source)).take(today.strftime("%Y-%m-%d"), budget):
            metrics.REFUSED.labels("variant_limit").inc()
            raise ApiError(429, "variant_limit", f"This image has had its {budget} new variants for today; use one "
                           "already made", headers={"Retry-After": str(_until_midnight(today))})
        body = await bucket.get(source)
        if not isinstance(body, R2ObjectBody):
            raise TransformError(9404, 404, "no such image")
        data = await body.bytes()
        started = time.perf_counter()
        rendered = await pool.run(render, data, chosen, limits["MAX_SOURCE_PIXELS"], limits["MAX_OUTPUT_BYTES"])
        metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
    return await library.save_variant(bucket, key, rendered, MEDIA_TYPES[chosen.format or "jpeg"], source)


