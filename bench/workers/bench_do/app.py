"""A worker for benchmarks: one counter class, and the same class without storage as a baseline."""
from __future__ import annotations

from typing import Any

from quart import Quart

from durable import DurableObject

app = Quart(__name__)


class BenchCounter(DurableObject):
    async def noop(self) -> None:
        return None

    async def increment(self) -> int:
        value = (await self.ctx.storage.get("n")) or 0
        await self.ctx.storage.put("n", value + 1)
        return value + 1

    async def read(self, key: str) -> Any:
        return await self.ctx.storage.get(key)


class PlainCounter:
    """The same methods on a plain object in memory: the baseline."""

    def __init__(self) -> None:
        self.n = 0

    async def noop(self) -> None:
        return None

    async def increment(self) -> int:
        self.n += 1
        return self.n


# -- routes for the cluster benchmark (bench/cluster_bench.py) ---------------------------------
import asyncio  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from quart import jsonify, request  # noqa: E402

from durable import ObjectUnavailable, env  # noqa: E402


@app.errorhandler(ObjectUnavailable)
async def unavailable(exc: ObjectUnavailable) -> Any:
    return jsonify({"error": type(exc).__name__, "message": str(exc)}), 503


@app.get("/node")
async def node() -> Any:
    return jsonify(env.node())


@app.post("/incr/<name>")
async def incr(name: str) -> Any:
    return jsonify({"n": await env.COUNTER.get_by_name(name).increment()})


@app.get("/rpc-timing/<name>")
async def rpc_timing(name: str) -> Any:
    """Latency of `noop` RPCs to one object, measured here (the calling node), one at a time."""
    stub = env.COUNTER.get_by_name(name)
    await stub.noop()
    samples = []
    for _ in range(int(request.args.get("n", "500"))):
        start = time.perf_counter()
        await stub.noop()
        samples.append((time.perf_counter() - start) * 1e6)
    q = statistics.quantiles(samples, n=100)
    return jsonify({"calls": len(samples), "p50_us": round(q[49], 1), "p99_us": round(q[98], 1)})


@app.post("/hot/<name>")
async def hot(name: str) -> Any:
    """Storage-writing RPCs per second on one object, from `c` concurrent callers on this node."""
    stub = env.COUNTER.get_by_name(name)
    total, concurrency = int(request.args.get("n", "5000")), int(request.args.get("c", "64"))
    remaining = total

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await stub.increment()
    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return jsonify({"writes": total, "writes_per_s": round(total / (time.perf_counter() - start))})
