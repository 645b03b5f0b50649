"""What /metrics costs on the hot path: base `GET /products/:id` in a session with metrics on
(request counts, wall and CPU time histograms, object and storage counters) against one with
DURABLE_METRICS=0, and one timing steps with the thread CPU clock (DURABLE_CPU_CLOCK=thread), in
the same run, rounds alternating so all see the same machine."""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from . import load
from .base_bench import DevSession, _post

ROUNDS = 7


async def bench_metrics(quick: bool) -> dict[str, Any]:
    n = 300 if quick else 3000
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {"on": DevSession(Path(tmp) / "on", workers=("base",), environ={"DURABLE_METRICS": "1"}),
                    "off": DevSession(Path(tmp) / "off", workers=("base",), environ={"DURABLE_METRICS": "0"}),
                    "thread": DevSession(Path(tmp) / "thread", workers=("base",),
                                         environ={"DURABLE_METRICS": "1", "DURABLE_CPU_CLOCK": "thread"})}
        try:
            paths = {}
            for name, dev in sessions.items():
                base = dev.urls["rest-shop-api"]
                product = _post(base + "/products", {"name": "Bench item", "price": 9.99, "stock": 10**9},
                                dev.token("admin"))["_id"]
                paths[name] = f"/products/{product}"
                await load.run(base, lambda i, p=paths[name]: ("GET", p, None, {}), requests=n // 2, concurrency=32)
            runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": [], "thread": []}
            for _ in range(ROUNDS):
                for name in ("off", "on", "thread"):
                    base = sessions[name].urls["rest-shop-api"]
                    runs[name].append(await load.run(base, lambda i, p=paths[name]: ("GET", p, None, {}),
                                                     requests=n, concurrency=32))
        finally:
            for dev in sessions.values():
                dev.stop()
    rps = {name: statistics.median(r["rps"] for r in results) for name, results in runs.items()}
    # each round's on/off pair ran back to back: their ratio is free of the machine's drift
    def paired(name: str) -> float:
        return round(statistics.median(a["rps"] / b["rps"] for a, b in zip(runs[name], runs["off"])), 3)
    return {"get_product_by_id_metrics_on_vs_off": {
        "rps_on": round(rps["on"]), "rps_off": round(rps["off"]),
        "rounds_on": [round(r["rps"]) for r in runs["on"]], "rounds_off": [round(r["rps"]) for r in runs["off"]],
        "ratio": paired("on"), "target": 0.95},
        "get_product_by_id_thread_cpu_clock_vs_off": {
            "rps": round(rps["thread"]), "rounds": [round(r["rps"]) for r in runs["thread"]],
            "ratio": paired("thread")}}
