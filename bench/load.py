"""A bounded HTTP load generator: N requests at concurrency C, latencies, rps, errors."""
from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp


async def run(base_url: str, make: Callable[[int], tuple[str, str, Any, dict[str, str]]], *, requests: int,
              concurrency: int, ok: Callable[[int], bool] = lambda s: s < 400) -> dict[str, Any]:
    """`make(i)` → (method, path, json, headers) for request i; each client sends one at a time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    next_index = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:
        async def client() -> None:
            nonlocal next_index, errors
            while next_index < requests:
                i = next_index
                next_index += 1
                method, path, body, headers = make(i)
                start = time.perf_counter()
                try:
                    async with session.request(method, path, json=body, headers=headers) as resp:
                        await resp.read()
                        statuses[resp.status] = statuses.get(resp.status, 0) + 1
                        if not ok(resp.status):
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - start)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return {"requests": requests, "concurrency": concurrency, "rps": round(requests / elapsed),
            "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2), "errors": errors,
            "statuses": {str(k): v for k, v in sorted(statuses.items())}}
