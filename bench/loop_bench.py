"""The event loop under the runtime: asyncio's against uvloop, each in a process of its own.

`python -m bench.loop_bench LOOP` runs Durable Object RPC in process and a storage-writing hot
object (the runtime benchmark's two figures) on that loop and prints them as JSON; `bench_loops`
runs both loops in alternating rounds and gives uvloop's ratios.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from durable import config as wconfig
from durable import event_loop
from durable.runtime import Runtime

from .runtime_bench import WORKER, bench_hot_object_writes, bench_rpc_cost

LOOPS = ("asyncio", "uvloop")


async def _measure(scale: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime([wconfig.load(WORKER)], persist_to=Path(tmp) / "state")
        await rt.start()
        try:
            rpc = await bench_rpc_cost(rt, int(20000 * scale))
            hot = await bench_hot_object_writes(rt, int(30000 * scale), 256)
        finally:
            await rt.close()
    return {"rpc_us": rpc["rpc_us"], "hot_writes_per_s": hot["writes_per_s"]}


async def bench_loops(quick: bool) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {loop: [] for loop in LOOPS}
    for _ in range(1 if quick else 3):
        for loop in LOOPS:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.loop_bench", loop,
                                                        "0.1" if quick else "1", stdout=subprocess.PIPE)
            runs[loop].append(json.loads((await proc.communicate())[0]))
    medians = {loop: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for loop, rs in runs.items()}
    return {**medians, "uvloop_rpc_time_ratio": round(medians["uvloop"]["rpc_us"] / medians["asyncio"]["rpc_us"], 2),
            "uvloop_hot_writes_ratio": round(medians["uvloop"]["hot_writes_per_s"]
                                             / medians["asyncio"]["hot_writes_per_s"], 2)}


if __name__ == "__main__":
    print(json.dumps(event_loop.run(_measure(float(sys.argv[2])), sys.argv[1])))
