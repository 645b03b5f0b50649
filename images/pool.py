"""The resize pool: Pillow runs in worker processes, never on the event loop, and at most
`capacity` jobs are taken at once; one more is refused at once (a 503 with Retry-After) rather
than queued behind minutes of work. The processes run at a lower CPU priority (`nice` 10): when
cores are short, a request's few milliseconds go before a resize's hundred."""
from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from web.errors import ApiError

T = TypeVar("T")
NICENESS = 10


def _lower_priority() -> None:
    os.nice(NICENESS)


def busy() -> ApiError:
    return ApiError(503, "images_busy", "Every image worker is busy; try again shortly", headers={"Retry-After": "1"})


class ResizePool:
    def __init__(self, workers: int, capacity: int) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.capacity = capacity or 2 * self.workers  # 0: two jobs per process (one running, one next)
        self.busy = 0
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:  # started on first use; "spawn": no copy of this process's loop and sockets
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_lower_priority)
        return self._executor

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """A place in the pool, taken before anything is spent on the job; a 503 when there is none."""
        if self.busy >= self.capacity:
            raise busy()
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """`job(*args)` in a pool process (within a `slot`)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), job, *args)
        except BrokenProcessPool:  # a worker died (killed, out of memory): a fresh pool for the next job
            self._executor = None
            raise ApiError(503, "images_busy", "An image worker stopped; try again shortly",
                           headers={"Retry-After": "1"}) from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
