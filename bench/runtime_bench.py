"""Runtime benchmarks on real objects and SQLite files: RPC cost, hot-object writes, get latency."""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from durable import config as wconfig
from durable.runtime import Runtime
from durable.storage import DurableObjectStorage, StorageEngine

HERE = Path(__file__).resolve().parent
WORKER = HERE / "workers" / "bench_do" / "wrangler.toml"


async def _per_call_us(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def bench_rpc_cost(rt: Runtime, n: int) -> dict[str, Any]:
    from bench.workers.bench_do.app import PlainCounter
    ns = rt.workers["bench-do"].env.COUNTER
    stub = ns.get(ns.id_from_name("rpc"))
    plain = PlainCounter()
    await stub.noop()
    plain_us = min([await _per_call_us(plain.noop, n) for _ in range(3)])
    rpc_us = min([await _per_call_us(stub.noop, n) for _ in range(3)])
    return {"calls": n, "plain_await_us": round(plain_us, 3), "rpc_us": round(rpc_us, 2),
            "ratio_rpc_to_plain": round(rpc_us / plain_us, 1)}


async def bench_hot_object_writes(rt: Runtime, n: int, concurrency: int) -> dict[str, Any]:
    from bench.workers.bench_do.app import PlainCounter
    ns = rt.workers["bench-do"].env.COUNTER
    stub = ns.get(ns.id_from_name("hot"))
    plain = PlainCounter()

    async def drive(method: Any) -> float:
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await method()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - start)

    plain_rps = await drive(plain.increment)
    engine = rt.workers["bench-do"].hosts["BenchCounter"].engine
    commits_before = engine.commits
    rps = await drive(stub.increment)
    assert await stub.increment() == n + 1, "lost update under concurrency"
    return {"rpcs": n, "concurrency": concurrency, "writes_per_s": round(rps),
            "plain_increments_per_s": round(plain_rps), "ratio_to_plain": round(rps / plain_rps, 4),
            "target_writes_per_s": 5000, "ratio_to_target": round(rps / 5000, 2),
            "sqlite_commits": engine.commits - commits_before}


async def bench_storage_get(tmp: Path, n: int) -> dict[str, Any]:
    engine = StorageEngine(tmp / "get.sqlite")
    storage = DurableObjectStorage(engine, "obj")
    await storage.put({f"k{i}": {"value": i, "name": f"item {i}"} for i in range(100)})
    await engine.flush()
    plain = {f"k{i}": {"value": i, "name": f"item {i}"} for i in range(100)}

    async def plain_get() -> Any:
        return dict(plain["k7"])

    async def cached() -> Any:
        return await storage.get("k7")

    async def cold() -> Any:
        storage.invalidate()
        return await storage.get("k7")
    result = {"plain_dict_copy_us": round(min([await _per_call_us(plain_get, n) for _ in range(3)]), 3),
              "cached_get_us": round(min([await _per_call_us(cached, n) for _ in range(3)]), 3),
              "uncached_get_us": round(min([await _per_call_us(cold, n) for _ in range(3)]), 3)}
    result["ratio_cached_to_plain"] = round(result["cached_get_us"] / result["plain_dict_copy_us"], 1)
    result["ratio_uncached_to_plain"] = round(result["uncached_get_us"] / result["plain_dict_copy_us"], 1)
    await engine.close()
    return result


async def bench_stall(rt: Runtime, n: int) -> dict[str, Any]:
    """Latency of a cheap RPC on object B, idle vs while object A takes a stream of writes."""
    ns = rt.workers["bench-do"].env.COUNTER
    a, b = ns.get(ns.id_from_name("writer")), ns.get(ns.id_from_name("reader"))
    await b.noop()

    async def probe(samples: int) -> list[float]:
        out = []
        for _ in range(samples):
            start = time.perf_counter()
            await b.noop()
            out.append((time.perf_counter() - start) * 1e6)
            await asyncio.sleep(0)
        return out

    idle = await probe(n)
    stop = False

    async def writer() -> None:
        while not stop:
            await asyncio.gather(*(a.increment() for _ in range(64)))
    task = asyncio.ensure_future(writer())
    busy = await probe(n)
    stop = True
    await task
    p = lambda xs, q: statistics.quantiles(xs, n=100)[q - 1]  # noqa: E731
    return {"probe_rpcs": n, "idle_p50_us": round(p(idle, 50), 1), "idle_p99_us": round(p(idle, 99), 1),
            "busy_p50_us": round(p(busy, 50), 1), "busy_p99_us": round(p(busy, 99), 1),
            "ratio_p99_busy_to_idle": round(p(busy, 99) / p(idle, 99), 1)}


async def bench_runtime(quick: bool) -> dict[str, Any]:
    scale = 0.1 if quick else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime([wconfig.load(WORKER)], persist_to=Path(tmp) / "state")
        await rt.start()
        try:
            return {
                "do_rpc_in_process": await bench_rpc_cost(rt, int(20000 * scale)),
                "hot_object_storage_writes": await bench_hot_object_writes(rt, int(30000 * scale), 256),
                "storage_get": await bench_storage_get(Path(tmp), int(50000 * scale)),
                "other_object_latency_under_write_load": await bench_stall(rt, int(2000 * scale)),
            }
        finally:
            await rt.close()
