"""Payments over HTTP: `initiate` with the local Stripe at 50 clients, and replay vs first latency.

All three workers run in a `wrangler dev` subprocess (no provider keys → local Stripe).
"""
from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any



from . import load
from .base_bench import DevSession, _post


def _initiate(url: str, token: str, order_id: str, key: str) -> float:
    body = {"orderId": order_id, "paymentMethod": "stripe", "paymentData": {"paymentMethodId": "pm_card_visa"}}
    req = urllib.request.Request(url + "/api/payments/initiate", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "Authorization": f"Bearer {token}",
                                          "Idempotency-Key": key})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()
    return time.perf_counter() - start


async def bench_payments(quick: bool) -> dict[str, Any]:
    n = 100 if quick else 600
    with tempfile.TemporaryDirectory() as tmp:
        dev = DevSession(Path(tmp), workers=("base", "payments", "gateway"))
        try:
            gateway = dev.urls["rest-shop-gateway"]
            admin = dev.token("admin")
            users = [dev.token("user") for i in range(50)]
            product = _post(gateway + "/api/products", {"name": "Pay bench", "price": 5, "stock": 10**9}, admin)["_id"]
            orders = [_post(gateway + "/api/orders", {"productId": product}, users[i % 50])["createdOrder"]["_id"]
                      for i in range(n)]
            first = await load.run(gateway, lambda i: (
                "POST", "/api/payments/initiate",
                {"orderId": orders[i], "paymentMethod": "stripe", "paymentData": {"paymentMethodId": "pm_card_visa"}},
                {"Authorization": f"Bearer {users[i % 50]}", "Idempotency-Key": f"bench-{i}"}),
                requests=n, concurrency=50)
            replay = await load.run(gateway, lambda i: (
                "POST", "/api/payments/initiate",
                {"orderId": orders[i], "paymentMethod": "stripe", "paymentData": {"paymentMethodId": "pm_card_visa"}},
                {"Authorization": f"Bearer {users[i % 50]}", "Idempotency-Key": f"bench-{i}"}),
                requests=n, concurrency=50)
            # sequential latencies, one client: first request vs its replay
            fresh = [_post(gateway + "/api/orders", {"productId": product}, users[0])["createdOrder"]["_id"]
                     for _ in range(30)]
            ops = dev.opcounters()
            first_ms = sorted(_initiate(gateway, users[0], o, f"seq-{o}") * 1000 for o in fresh)
            per_initiate = dev.opcounters(since=ops, per=len(fresh))
            replay_ms = sorted(_initiate(gateway, users[0], o, f"seq-{o}") * 1000 for o in fresh)
            ops = dev.opcounters()
            for _ in range(len(fresh)):
                _post(gateway + "/api/orders", {"productId": product}, users[1])
            per_order = dev.opcounters(since=ops, per=len(fresh))
        finally:
            dev.stop()
    median = lambda xs: xs[len(xs) // 2]  # noqa: E731
    return {"initiate_50_clients": first, "replay_50_clients": replay,
            "database_commands_per_operation": {"card_initiate": per_initiate, "order": per_order,
                                                "budgets": {"card_initiate": 5, "order": 3},
                                                "counted_by": "serverStatus opcounters around sequential requests (a payment includes the read of its own webhook)"},
            "sequential_latency": {"first_p50_ms": round(median(first_ms), 2), "replay_p50_ms": round(median(replay_ms), 2),
                                   "ratio_replay_to_first": round(median(replay_ms) / median(first_ms), 2)}}
