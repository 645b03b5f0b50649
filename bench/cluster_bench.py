"""Cluster benchmarks on real processes (`wrangler dev --nodes 2`) against a single node (`wrangler dev`).

- RPC from node-0 to an object owned by node-0 (in process) vs by node-1 (signed HTTP), p50/p99.
- Storage-writing RPCs on one hot object: MongoDB storage (cluster) vs SQLite (single node).
- Fail-over: kill -9 the owner of an object; time until the next successful write on the new owner.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from durable.cluster.placement import DEFAULT_SHARDS, lease_id, owner_of, shard_of
from durable.objects import DurableObjectNamespace

HERE = Path(__file__).resolve().parent
WORKER = HERE / "workers" / "bench_do" / "wrangler.toml"
COUNTERS = DurableObjectNamespace("bench-do", "BenchCounter", None)  # type: ignore[arg-type]


def placed_on(node: str, members: list[str], prefix: str) -> str:
    for i in range(100_000):
        name = f"{prefix}-{i}"
        shard = shard_of(str(COUNTERS.id_from_name(name)), DEFAULT_SHARDS)
        if owner_of(lease_id("bench-do.BenchCounter", shard), members) == node:
            return name
    raise RuntimeError("no name placed there")


class Session:
    """A `wrangler dev` subprocess; `urls[node]` is each node's bench-do URL."""

    def __init__(self, *args: str) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        command = [sys.executable, "-m", "wrangler", "dev", "-c", str(WORKER), "--port", "0",
                   "--persist-to", str(Path(self.tmp.name) / "state"), *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.urls: dict[str, str] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = re.match(r"^\s+(node-\d+) bench-do\s+(http://\S+)", line)
            if match:
                self.urls[match.group(1)] = match.group(2)
            if "Ready on" in line:
                if not self.urls:
                    self.urls["single"] = line.split("Ready on", 1)[1].strip()
                break
        else:
            raise RuntimeError("wrangler dev did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.tmp.cleanup()


async def _json(http: aiohttp.ClientSession, method: str, url: str) -> tuple[int, Any]:
    async with http.request(method, url) as resp:
        return resp.status, await resp.json(content_type=None)


async def _members_ready(http: aiohttp.ClientSession, urls: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        views = [await _json(http, "GET", f"{url}/node") for url in urls.values()]
        if all(len(body["members"]) == len(urls) for _, body in views):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("nodes did not see each other")


async def bench_cluster(quick: bool) -> dict[str, Any]:
    calls, writes = (300, 1000) if quick else (2000, 5000)
    results: dict[str, Any] = {}
    single = Session()
    try:
        async with aiohttp.ClientSession() as http:
            _, sqlite = await _json(http, "POST", f"{single.urls['single']}/hot/hot?n={writes}&c=64")
    finally:
        single.stop()
    cluster = Session("--nodes", "2")
    try:
        async with aiohttp.ClientSession() as http:
            await _members_ready(http, cluster.urls)
            members = sorted(cluster.urls)
            local, remote = placed_on("node-0", members, "rpc"), placed_on("node-1", members, "rpc")
            _, near = await _json(http, "GET", f"{cluster.urls['node-0']}/rpc-timing/{local}?n={calls}")
            _, far = await _json(http, "GET", f"{cluster.urls['node-0']}/rpc-timing/{remote}?n={calls}")
            results["rpc_remote_vs_local"] = {
                "calls": calls, "local_p50_us": near["p50_us"], "local_p99_us": near["p99_us"],
                "remote_p50_us": far["p50_us"], "remote_p99_us": far["p99_us"],
                "ratio_p50_remote_to_local": round(far["p50_us"] / near["p50_us"], 1),
                "target_remote_p50_us": 2000}
            hot = placed_on("node-0", members, "hot")
            _, mongo = await _json(http, "POST", f"{cluster.urls['node-0']}/hot/{hot}?n={writes}&c=64")
            results["hot_object_writes_mongo_vs_sqlite"] = {
                "writes": writes, "concurrency": 64, "mongo_writes_per_s": mongo["writes_per_s"],
                "sqlite_writes_per_s": sqlite["writes_per_s"],
                "ratio_mongo_to_sqlite": round(mongo["writes_per_s"] / sqlite["writes_per_s"], 3)}
            victim = placed_on("node-1", members, "failover")
            status, _ = await _json(http, "POST", f"{cluster.urls['node-0']}/incr/{victim}")
            assert status == 200
            _, info = await _json(http, "GET", f"{cluster.urls['node-1']}/node")
            os.kill(info["pid"], signal.SIGKILL)
            killed = time.monotonic()
            while True:
                status, _ = await _json(http, "POST", f"{cluster.urls['node-0']}/incr/{victim}")
                if status == 200:
                    break
            results["failover_after_kill_9"] = {"lease_s": info["leaseS"],
                                                "seconds_to_first_write": round(time.monotonic() - killed, 2),
                                                "target_s": 10}
    finally:
        cluster.stop()
    return results
