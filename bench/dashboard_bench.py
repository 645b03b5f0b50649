"""The dashboard's cost: the JSON hello on `wrangler dev` with the dashboard, without it
(`--no-dashboard`), and with it open (a client polling its views every 2 s, as the page does):
wrk's load, a fresh pair of processes per round. The target: nothing measurable while nobody
looks (>= 0.97x). On a shared 2-core VM rounds swing by more than that, so the sampler (all the
dashboard does while nobody looks) is also timed alone."""
from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from durable.observe.dashboard.series import STEP_S, Sampler, read_totals
from durable.observe.metrics import RequestMeter

from .server_bench import Process, rounds, wrk

POLL_S = 2.0


def _dev(state: Path, *flags: str) -> Process:
    return Process([sys.executable, "-m", "wrangler", "dev", "-c", "bench/workers/hello/wrangler.toml", "--port", "0",
                    "--persist-to", str(state), *flags], r"(?m)^\s+(?:bench-hello|dashboard)\s+(http://\S+)")


async def _watched(hello: str, board: str, seconds: float) -> dict[str, Any]:
    """The load while a client reads the dashboard's views as an open page does."""
    async def watch() -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                for view in ("overview", "series"):
                    async with http.get(f"{board}api/{view}") as resp:
                        await resp.read()
                await asyncio.sleep(POLL_S)
    watcher = asyncio.ensure_future(watch())
    try:
        return await wrk(hello + "/hello", seconds)
    finally:
        watcher.cancel()


async def _one_pair(state: Path, seconds: float) -> dict[str, Any]:
    """A fresh pair of processes (each process's speed varies a few per cent with its hash seed
    and memory layout: new ones each round average that out), each contender measured once."""
    with_board, without = _dev(state / "a"), _dev(state / "b", "--no-dashboard")
    try:
        hello, board = with_board.urls[0], with_board.urls[1]
        assert re.search(r"/dashboard/$", board), with_board.urls
        return await rounds({"no_dashboard": lambda s: wrk(without.urls[0] + "/hello", s),
                             "dashboard_closed": lambda s: wrk(hello + "/hello", s),
                             "dashboard_open": lambda s: _watched(hello, board, s)}, 1, seconds)
    finally:
        with_board.stop()
        without.stop()


def sampler_cost(workers: int = 4, routes: int = 40, samples: int = 5000) -> dict[str, Any]:
    """What the dashboard does while nobody looks, timed alone: one reading per STEP_S of every
    worker's running totals. Its share of a core is the whole of its cost."""
    meters = {f"w{i}": RequestMeter(f"bench-w{i}") for i in range(workers)}
    for meter in meters.values():
        for route in range(routes):
            meter.observe(f"/r{route}", "GET", 200, 0.003, 0.001)
    sampler = Sampler(list(meters), lambda: read_totals(meters))
    started = time.perf_counter()
    for _ in range(samples):
        sampler.sample()
    took_us = (time.perf_counter() - started) / samples * 1e6
    return {"workers": workers, "routes_each": routes, "sample_us": round(took_us, 1), "step_s": STEP_S,
            "share_of_a_core": f"{took_us / (STEP_S * 1e6):.6%}"}


async def bench_dashboard(quick: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk; `make bench` does it when root)"}
    n, seconds = (1, 2.0) if quick else (5, 5.0)
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            pairs.append(await _one_pair(Path(tmp) / str(i), seconds))
    result: dict[str, Any] = {}
    for name in pairs[0]:
        runs = [pair[name] for pair in pairs]
        result[name] = {"rps_rounds": [r["rps"] for r in runs], "rps": round(statistics.median(r["rps"] for r in runs)),
                        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
                        "failed": sum(r["failed"] for r in runs)}
    for name in ("dashboard_closed", "dashboard_open"):
        ratios = [pair[name]["rps"] / pair["no_dashboard"]["rps"] for pair in pairs]
        result[name]["ratio_to_no_dashboard"] = round(statistics.median(ratios), 2)
        result[name]["round_ratios"] = [round(r, 2) for r in ratios]
    return {**result, "target_closed": 0.97, "sampler_alone": sampler_cost()}
