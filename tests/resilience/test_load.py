"""A bounded load run through the gateway of a real `wrangler dev`: 50 clients browsing,
ordering and paying for LOAD_SECONDS (CI: 15 s; the closing figures: 120 s), then the
invariants: no 5xx, no stock oversold or leaked, no double charge, every charge recorded."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import JWT_KEY, SERVICE_AUTH_KEY, UNLIMITED

pytestmark = pytest.mark.slow
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", 15))
CLIENTS = 50
STOCK = 100_000


async def test_mixed_load_through_the_gateway_keeps_the_invariants(dev_process, tmp_path: Path,
                                                                   mongo_uri: str) -> None:
    db = f"load_{ObjectId()}"
    dev = dev_process("--port", "0", "--persist-to", str(tmp_path), "--var", f"MONGODB_DB:{db}",
                      "--var", f"RATE_LIMITS:{UNLIMITED}",
                      "--var", "MAX_UNPAID_ORDERS:1000000", "--var", "MAX_UNPAID_UNITS:1000000000",
                      "--var", "REQUIRE_SERVICE_AUTH:true",
                      extra_env={"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY, "SERVICE_AUTH_KEY": SERVICE_AUTH_KEY,
                                 "STRIPE_SECRET_KEY": None})
    stripe_url = next(m.group(1) for line in dev.stderr_lines
                      if (m := re.search(r"local Stripe server at (http://\S+)", line)))
    load = Load(dev.ready_url.rstrip("/"), MongoClient(mongo_uri)[db])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as load.http:
        admin = mint_token(load.db, JWT_KEY, "admin", str(ObjectId()), "a@x.io")
        for i in range(10):
            status, product = await load.call("POST", "/api/products", {"name": f"Load item {i}", "price": 5 + i,
                                                                        "stock": STOCK},
                                              {"Authorization": f"Bearer {admin}"})
            assert status == 201
            load.products.append(product["_id"])
        started = time.perf_counter()
        await asyncio.gather(*(load.client(n) for n in range(CLIENTS)))
        elapsed = time.perf_counter() - started
    server_errors = load.report(started, elapsed)
    assert server_errors == 0, "\n".join(load.failures + ["server log tail:", *dev.stderr_lines[-40:]])
    _stock_and_charges_add_up(load, stripe_url)
    MongoClient(mongo_uri).drop_database(db)


class Load:
    """Shoppers browsing, ordering and paying through the gateway, and what they were answered."""

    def __init__(self, gateway: str, db: Any) -> None:
        self.gateway, self.db = gateway, db
        self.http: aiohttp.ClientSession
        self.products: list[str] = []
        self.latencies: list[float] = []
        self.finished: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.kinds: Counter[str] = Counter()
        self.failures: list[str] = []

    async def call(self, method: str, path: str, body: object = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        started = time.perf_counter()
        async with self.http.request(method, self.gateway + path, json=body, headers=headers or {}) as resp:
            reply = await resp.json(content_type=None)
        self.latencies.append(time.perf_counter() - started)
        self.finished.append(time.perf_counter())
        self.statuses[resp.status] += 1
        if resp.status >= 500 and len(self.failures) < 5:
            self.failures.append(f"{method} {path} → {resp.status} {reply}")
        return resp.status, reply

    async def client(self, n: int) -> None:
        rng = random.Random(n)
        token = mint_token(self.db, JWT_KEY, "user", str(ObjectId()), f"l{n}@x.io")
        auth = {"Authorization": f"Bearer {token}"}
        unpaid: list[str] = []
        step = 0
        end = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < end:
            step += 1
            roll = rng.random()
            if roll < 0.6:
                self.kinds["browse"] += 1
                path = rng.choice(["/api/products?limit=20", f"/api/products/{rng.choice(self.products)}",
                                   "/api/products?sort=price_asc&limit=5"])
                await self.call("GET", path)
            elif roll < 0.85 or not unpaid:
                self.kinds["order"] += 1
                status, reply = await self.call("POST", "/api/orders", {"productId": rng.choice(self.products),
                                                                       "quantity": rng.randint(1, 3)},
                                                {**auth, "Idempotency-Key": f"o-{n}-{step}"})
                if status == 201:
                    unpaid.append(reply["createdOrder"]["_id"])
            else:
                self.kinds["pay"] += 1
                await self.call("POST", "/api/payments/initiate",
                                {"orderId": unpaid.pop(), "paymentMethod": "card",
                                 "paymentData": {"paymentMethodId": "pm_card_visa"}},
                                {**auth, "Idempotency-Key": f"p-{n}-{step}"})

    def report(self, started: float, elapsed: float) -> int:
        """Print the run's figures (does the shop hold its pace? first vs last window); the 5xx count."""
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        q = statistics.quantiles(self.latencies, n=100)
        window = min(30.0, elapsed / 4)
        first = sum(1 for t in self.finished if t <= started + window) / window
        last = sum(1 for t in self.finished if t >= started + elapsed - window) / window
        per_10s = Counter(int((t - started) // 10) for t in self.finished if t >= started)
        print(f"load: {len(self.latencies)} requests in {elapsed:.1f} s = {len(self.latencies) / elapsed:.0f} rps, "
              f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, 5xx {server_errors}, "
              f"first {window:.0f} s {first:.0f} rps, last {window:.0f} s {last:.0f} rps ({last / first:.2f}x), "
              f"mix {dict(self.kinds)}, statuses {dict(self.statuses)}, "
              f"rps per 10 s {[round(per_10s[i] / 10) for i in range(int(elapsed // 10))]}")
        return server_errors


def _stock_and_charges_add_up(load: Load, stripe_url: str) -> None:
    """No stock oversold or leaked; one charge per payment at most, each one recorded."""
    for product_id in load.products:
        doc = load.db["products"].find_one({"_id": ObjectId(product_id)})
        held = sum(i["quantity"] for o in load.db["orders"].find({"status": {"$ne": "cancelled"}})
                   for i in o["items"] if i["productId"] == product_id)
        assert doc["stock"] >= 0 and doc["stock"] + held == STOCK
    with urllib.request.urlopen(f"{stripe_url}/_local/ledger", timeout=10) as resp:
        charges = [e for e in json.loads(resp.read())["ledger"] if e["type"] == "charge"]
    per_payment = Counter(e["payment_id"] for e in charges)
    assert all(n == 1 for n in per_payment.values())
    records = {str(p["_id"]) for p in load.db["payments"].find()}
    assert set(per_payment) <= records
