"""Per-worker time series for the dashboard: requests/s, error ratio, p50/p99 and CPU per request.

Every `STEP_S` the sampler reads each worker's running totals (kept by its request meter as
plain numbers) and keeps the difference from the last reading: rates, not totals, for the last
`WINDOW_S`. A reading costs microseconds, so it runs whether or not anyone looks, and a page
opened now already shows the last quarter of an hour.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..metrics import WALL_BUCKETS, RequestMeter

log = logging.getLogger("durable.dashboard")

STEP_S = float(os.environ.get("DURABLE_DASHBOARD_STEP_S", 5.0))  # (the browser test takes 1 s)
WINDOW_S = 15 * 60.0


@dataclass
class Totals:
    """One worker's cumulative counts at one reading."""
    requests: float = 0.0
    errors: float = 0.0  # answered 5xx, or never answered
    cpu_seconds: float = 0.0
    cpu_count: float = 0.0
    wall: dict[float, float] = field(default_factory=dict)  # histogram bucket upper bound → cumulative count


def read_totals(meters: dict[str, RequestMeter | None]) -> dict[str, Totals]:
    """Each worker's running totals (kept by its request meter as plain numbers), copied."""
    totals = {}
    for worker, meter in meters.items():
        if meter is None:  # metrics are off (DURABLE_METRICS=0): nothing counted
            continue
        running = meter.totals
        cumulative, buckets = 0.0, {}
        for bound, count in zip((*WALL_BUCKETS, math.inf), running.wall):
            cumulative += count
            buckets[bound] = cumulative
        totals[worker] = Totals(running.requests, running.errors, running.cpu_seconds, running.cpu_count, buckets)
    return totals


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram, interpolated inside its bucket as Prometheus's
    histogram_quantile does; None without observations. Above the last finite bound: that bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return bounds[-1]


def _increase(now: float, before: float) -> float:
    """A counter's increase; one that went down was reset, and counts from zero (as rate() does)."""
    return now - before if now >= before else now


def point(at: float, span_s: float, now: Totals, before: Totals) -> dict[str, Any]:
    """What happened between two readings, `span_s` apart."""
    requests = _increase(now.requests, before.requests)
    cpu_count = _increase(now.cpu_count, before.cpu_count)
    wall = {bound: _increase(count, before.wall.get(bound, 0.0)) for bound, count in now.wall.items()}
    p50, p99 = quantile(0.5, wall), quantile(0.99, wall)
    return {"t": round(at, 3), "rps": round(requests / span_s, 2),
            "errorRatio": round(_increase(now.errors, before.errors) / requests, 4) if requests else 0.0,
            "p50Ms": None if p50 is None else round(p50 * 1000, 2),
            "p99Ms": None if p99 is None else round(p99 * 1000, 2),
            "cpuMsPerRequest": round(_increase(now.cpu_seconds, before.cpu_seconds) / cpu_count * 1000, 3)
            if cpu_count else None,
            "requests": int(now.requests)}


class Sampler:
    """The last WINDOW_S of each worker's request figures, one point per STEP_S."""

    def __init__(self, workers: Iterable[str], read: Callable[[], dict[str, Totals]], step_s: float = STEP_S,
                 clock: Callable[[], float] = time.time, span_clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = list(workers)
        self.step_s = step_s
        self._read = read
        self._clock = clock  # the time a point is stamped with
        self._span_clock = span_clock  # the time between readings (a wall clock may step)
        size = int(WINDOW_S / step_s)
        self.points: dict[str, deque[dict[str, Any]]] = {w: deque(maxlen=size) for w in self.workers}
        self._last: tuple[float, dict[str, Totals]] | None = None
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        at, now, totals = self._clock(), self._span_clock(), self._read()
        if self._last is not None:
            then, before = self._last
            for worker in self.workers:
                self.points[worker].append(point(at, max(now - then, 1e-6), totals.get(worker, Totals()),
                                                 before.get(worker, Totals())))
        self._last = (now, totals)

    def series(self) -> dict[str, list[dict[str, Any]]]:
        return {worker: list(points) for worker, points in self.points.items()}

    def start(self) -> None:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.step_s)
            try:
                self.sample()
            except Exception:  # the charts must outlive one bad reading
                log.exception("dashboard: a sample of the request figures failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
