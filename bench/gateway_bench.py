"""The gateway's cost and its cache, and stock contention, over HTTP on one `wrangler dev`.

Every request through the gateway spends a rate-limit token (a RateLimiter object), passes
the breaker, is signed and forwarded through the service binding; cached reads skip the
forward. Baselines are base itself and a bare Quart hello-world, in the same run.
"""
from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from . import load
from .base_bench import DevSession, _post

UNLIMITED = "base.read=1000000000/60, base.write=1000000000/60, payments.read=1000000000/60, payments.write=1000000000/60"


async def contention(dev: DevSession, gateway: str, admin: str, buyers: int, stock: int) -> dict[str, Any]:
    """`buyers` concurrent orders for one product with `stock` units: exactly `stock` succeed."""
    product = _post(gateway + "/api/products", {"name": "Scarce", "price": 5, "stock": stock}, admin)
    tokens = [dev.token("user") for i in range(buyers)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=buyers)) as http:
        async def buy(token: str) -> int:
            async with http.post(gateway + "/api/orders", json={"productId": product["_id"], "quantity": 1},
                                 headers={"Authorization": f"Bearer {token}"}) as resp:
                return resp.status
        started = time.perf_counter()
        statuses = await asyncio.gather(*(buy(t) for t in tokens))
        settled_s = time.perf_counter() - started
        async with http.get(f"{gateway}/api/products/{product['_id']}",
                            headers={"Authorization": f"Bearer {admin}"}) as resp:
            left = (await resp.json())["stock"]
    return {"buyers": buyers, "stock": stock, "created": statuses.count(201),
            "refused_409": statuses.count(409), "other": len(statuses) - statuses.count(201) - statuses.count(409),
            "stock_left": left, "exact": statuses.count(201) == stock and left == 0,
            "settle_s": round(settled_s, 3)}


ROUNDS = 5


async def paired(baseline: Callable[[], Awaitable[dict[str, Any]]], measured: Callable[[], Awaitable[dict[str, Any]]]
                 ) -> tuple[dict[str, Any], dict[str, Any], list[float]]:
    """Baseline and measured load in alternating rounds (the order flips each round), so a drift
    of this machine's speed falls on both: each round's ratio, and each side's median round."""
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for i in range(ROUNDS):
        if i % 2:
            second = await measured()
            rounds.append((await baseline(), second))
        else:
            first = await baseline()
            rounds.append((first, await measured()))
    ratios = [round(m["rps"] / b["rps"], 2) for b, m in rounds]

    def median_round(side: int) -> dict[str, Any]:
        return sorted((r[side] for r in rounds), key=lambda result: result["rps"])[len(rounds) // 2]
    return median_round(0), median_round(1), ratios


async def bench_gateway(quick: bool) -> dict[str, Any]:
    n = 400 if quick else 10000  # rounds of 2,000 (of 800 a round took 0.3 s, and its ratio swung 0.66-1.01)
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevSession(Path(tmp), ("gateway", "base", "payments", "bench/workers/hello"),
                         {"RATE_LIMITS": UNLIMITED})
        try:
            gateway, base, hello = dev.urls["rest-shop-gateway"], dev.urls["rest-shop-api"], dev.urls["bench-hello"]
            admin = dev.token("admin")
            product = _post(base + "/products", {"name": "Bench lamp", "price": 9.99, "stock": 100}, admin)["_id"]
            path = f"/products/{product}"
            hello_rps = await load.run(hello, lambda i: ("GET", "/hello", None, {}), requests=n, concurrency=32)
            direct, through, ratios = await paired(
                lambda: load.run(base, lambda i: ("GET", path, None, {}), requests=n // ROUNDS, concurrency=32),
                lambda: load.run(gateway, lambda i: ("GET", "/api" + path, None, {"Cache-Control": "no-cache"}),
                                 requests=n // ROUNDS, concurrency=32))
            cached = await load.run(gateway, lambda i: ("GET", "/api" + path, None, {}), requests=n, concurrency=32)
            race = await contention(dev, gateway, admin, buyers=100 if quick else 500, stock=10 if quick else 50)
        finally:
            dev.stop()
    return {
        "base_direct_get_product": {**direct, "ratio_to_hello": round(direct["rps"] / hello_rps["rps"], 2)},
        "gateway_get_product_uncached": {**through, "ratio_to_base_direct": statistics.median(ratios),
                                         "round_ratios": ratios, "target": 0.8},
        "gateway_get_product_cached": {**cached, "ratio_to_base_direct": round(cached["rps"] / direct["rps"], 2)},
        "orders_contention": race,
    }
