"""What /metrics costs on the hot path: base `GET /products/:id` in a session with metrics on
(request counts, wall and CPU time histograms, object and storage counters) against one with
DURABLE_METRICS=0, and one timing steps with the thread CPU clock (DURABLE_CPU_CLOCK=thread), in
the same run. Rounds alternate their order (ABBA), and each figure is the median of per-round
pairs, so the machine's drift cancels. The headline ratio is the server's own CPU per request
(from /proc), off over on: what metrics cost is CPU, and on this VM throughput also carries the
load generator's noise (±7 % run to run; its ratio is given beside it)."""
from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from . import load
from .base_bench import DevSession, _post

ROUNDS = 12
SESSIONS = {"off": {"DURABLE_METRICS": "0"}, "on": {"DURABLE_METRICS": "1"},
            "thread": {"DURABLE_METRICS": "1", "DURABLE_CPU_CLOCK": "thread"}}


def process_cpu_s(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_metrics(quick: bool) -> dict[str, Any]:
    n = 300 if quick else 3000
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SESSIONS}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {name: DevSession(Path(tmp) / name, workers=("base",), environ=environ)
                    for name, environ in SESSIONS.items()}
        try:
            paths = {}
            for name, dev in sessions.items():
                base = dev.urls["rest-shop-api"]
                product = _post(base + "/products", {"name": "Bench item", "price": 9.99, "stock": 10**9},
                                dev.token("admin"))["_id"]
                paths[name] = f"/products/{product}"
                await load.run(base, lambda i, p=paths[name]: ("GET", p, None, {}), requests=n // 2, concurrency=32)
            for round_ in range(ROUNDS):
                order = list(SESSIONS) if round_ % 2 == 0 else list(reversed(SESSIONS))
                for name in order:
                    dev = sessions[name]
                    before = process_cpu_s(dev.proc.pid)
                    result = await load.run(dev.urls["rest-shop-api"], lambda i, p=paths[name]: ("GET", p, None, {}),
                                            requests=n, concurrency=32)
                    result["cpu_us_per_request"] = (process_cpu_s(dev.proc.pid) - before) / n * 1e6
                    runs[name].append(result)
        finally:
            for dev in sessions.values():
                dev.stop()

    def paired(name: str, key: str, inverse: bool = False) -> float:
        ratios = [(b[key] / a[key]) if inverse else (a[key] / b[key]) for a, b in zip(runs[name], runs["off"])]
        return round(statistics.median(ratios), 3)

    def cpu(name: str) -> float:
        return round(statistics.median(r["cpu_us_per_request"] for r in runs[name]), 1)
    return {
        "get_product_by_id_metrics_on_vs_off": {
            "server_cpu_us_per_request_on": cpu("on"), "server_cpu_us_per_request_off": cpu("off"),
            "ratio": paired("on", "cpu_us_per_request", inverse=True), "target": 0.95,
            "rps_on": round(statistics.median(r["rps"] for r in runs["on"])),
            "rps_off": round(statistics.median(r["rps"] for r in runs["off"])), "rps_ratio": paired("on", "rps")},
        "get_product_by_id_thread_cpu_clock_vs_off": {
            "server_cpu_us_per_request": cpu("thread"), "ratio": paired("thread", "cpu_us_per_request", inverse=True),
            "rps": round(statistics.median(r["rps"] for r in runs["thread"])), "rps_ratio": paired("thread", "rps")}}
