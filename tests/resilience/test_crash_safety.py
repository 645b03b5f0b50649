"""kill -9 at random moments: base, payments and the gateway each in their own `wrangler dev`
process, a stream of customers ordering and paying through the gateway and retrying with the
same Idempotency-Key (as a real client does), processes killed and restarted under them.
Afterwards: no acknowledged order lost, no stock oversold or leaked, no double charge in the
Stripe ledger, every charge has a payment record, every charged order is confirmed and paid."""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bson import ObjectId
from pymongo import MongoClient

from base.stores.orders import VOID
from tests.accounts import mint_token
from tests.clients import ledger
from tests.conftest import (
    BASE_TOML,
    GATEWAY_TOML,
    JWT_KEY,
    PAYMENTS_TOML,
    SERVICE_AUTH_KEY,
    UNLIMITED,
)
from tests.net import free_port

pytestmark = pytest.mark.slow
CUSTOMERS = int(os.environ.get("CRASH_CUSTOMERS", 24))
KILLS = int(os.environ.get("CRASH_KILLS", 6))
STOCK = 40
LIVE = {VOID: {"$exists": False}}  # an undone creation leaves a stub under its id (base/stores/orders.py)




async def until_done(http: aiohttp.ClientSession, method: str, url: str, body: Any, headers: dict[str, str],
                     deadline: float) -> tuple[int, Any]:
    """A real client: retry with the same Idempotency-Key through resets, 5xx and 'in progress'."""
    while True:
        try:
            async with http.request(method, url, json=body, headers=headers) as resp:
                reply = await resp.json(content_type=None)
                code = (reply or {}).get("error", {}).get("code") if isinstance(reply, dict) else None
                if resp.status < 500 and code != "idempotency_in_progress":
                    return resp.status, reply
        except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError):
            pass
        if time.monotonic() > deadline:
            return 0, None
        await asyncio.sleep(0.1 + random.random() * 0.2)


async def _chaos(procs: dict[str, Any], start: Any, rng: random.Random) -> None:
    """KILLS times, kill -9 one of the three at random and start it again."""
    for _ in range(KILLS):
        await asyncio.sleep(0.5 + rng.random() * 1.5)
        victim = rng.choice(sorted(procs))
        await asyncio.to_thread(procs[victim].kill9)
        procs[victim] = await asyncio.to_thread(start, victim)


def _worker_args(db: str, stripe_url: str) -> dict[str, list[str]]:
    """Three workers in processes of their own, so one can be killed alone."""
    return {"base": ["-c", str(BASE_TOML), "--var", f"MONGODB_DB:{db}", "--var", "ORDER_RECOVERY_S:1"],
            "payments": ["-c", str(PAYMENTS_TOML), "--var", f"MONGODB_DB:{db}_pay", "--var", "PAYMENT_PROVIDERS:stripe",
                         "--var", f"STRIPE_API_BASE:{stripe_url}"],
            "gateway": ["-c", str(GATEWAY_TOML), "--var", f"RATE_LIMITS:{UNLIMITED}", "--var", "BREAKER_FAILURES:1000"]}


async def test_random_kills_keep_every_invariant(dev_process, tmp_path: Path, mongo_uri: str,
                                                 stripe_server) -> None:  # noqa: F811
    stripe_url, stripe_key = stripe_server
    db = f"t_{uuid.uuid4().hex[:16]}"
    env = {"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY, "SERVICE_AUTH_KEY": SERVICE_AUTH_KEY,
           "STRIPE_SECRET_KEY": stripe_key, "STRIPE_WEBHOOK_SECRET": "whsec_not_used_here"}
    ports = {name: free_port() for name in ("base", "payments", "gateway")}
    args = _worker_args(db, stripe_url)

    def start(name: str):
        return dev_process(*args[name], "--port", str(ports[name]), "--persist-to", str(tmp_path / name),
                           "--var", "REQUIRE_SERVICE_AUTH:true", "--alarm-backoff", "0.2", extra_env=env)

    procs = {name: start(name) for name in ("base", "payments", "gateway")}
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    admin = mint_token(MongoClient(mongo_uri)[db], JWT_KEY, "admin", str(ObjectId()), "a@x.io")
    rng = random.Random(20261126)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        deadline = time.monotonic() + 120
        status, product = await until_done(http, "POST", f"{gateway}/api/products",
                                           {"name": "Crash-tested kettle", "price": 12.5, "stock": STOCK},
                                           {"Authorization": f"Bearer {admin}"}, deadline)
        assert status == 201
        acknowledged: dict[str, dict[str, Any]] = {}

        async def customer(i: int) -> None:
            await asyncio.sleep(rng.random() * 6)
            token = mint_token(MongoClient(mongo_uri)[db], JWT_KEY, "user", str(ObjectId()), f"c{i}@x.io")
            headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"order-{i}"}
            status, reply = await until_done(http, "POST", f"{gateway}/api/orders",
                                             {"productId": product["_id"], "quantity": 1 + i % 3}, headers, deadline)
            if status != 201:
                assert status in (0, 409), (status, reply)  # given up, or sold out
                return
            order_id = reply["createdOrder"]["_id"]
            acknowledged[order_id] = {"quantity": 1 + i % 3, "token": token}
            status, reply = await until_done(
                http, "POST", f"{gateway}/api/payments/initiate",
                {"orderId": order_id, "paymentMethod": "card", "paymentData": {"paymentMethodId": "pm_card_visa"}},
                {**headers, "Idempotency-Key": f"pay-{i}"}, deadline)
            acknowledged[order_id]["paid"] = status == 201

        await asyncio.gather(_chaos(procs, start, rng), *(customer(i) for i in range(CUSTOMERS)))

        base_db, pay_db = MongoClient(mongo_uri)[db], MongoClient(mongo_uri)[f"{db}_pay"]
        orders, per_payment, charged_orders = _nothing_lost_nothing_charged_twice(base_db, pay_db, stripe_url,
                                                                                  acknowledged)
        await _charged_orders_settle(http, gateway, admin, base_db, per_payment, charged_orders, deadline)
        await _stock_balances(base_db, product["_id"], deadline)
    assert len(acknowledged) >= 3  # the run did real work
    print(f"crash safety: {KILLS} kills, {CUSTOMERS} customers, {len(acknowledged)} orders acknowledged, "
          f"{sum(bool(a.get('paid')) for a in acknowledged.values())} payments acknowledged, "
          f"{len(per_payment)} charges, {len(orders)} orders stored")
    MongoClient(mongo_uri).drop_database(db)
    MongoClient(mongo_uri).drop_database(f"{db}_pay")


def _nothing_lost_nothing_charged_twice(base_db: Any, pay_db: Any, stripe_url: str,
                                        acknowledged: dict[str, dict[str, Any]]) -> tuple[dict, Counter, Counter]:
    orders = {str(o["_id"]): o for o in base_db["orders"].find(LIVE)}
    assert set(acknowledged) <= set(orders), "an acknowledged order was lost (or voided)"
    charges = [e for e in ledger(stripe_url) if e["type"] == "charge"]
    per_payment = Counter(e["payment_id"] for e in charges)
    assert all(n == 1 for n in per_payment.values()), f"double charge: {per_payment}"
    records = {str(p["_id"]): p for p in pay_db["payments"].find()}
    assert set(per_payment) <= set(records), "a charge without a payment record"
    charged_orders = Counter(records[pid]["orderId"] for pid in per_payment)
    assert all(n == 1 for n in charged_orders.values()), f"an order charged twice: {charged_orders}"
    return orders, per_payment, charged_orders


async def _charged_orders_settle(http: aiohttp.ClientSession, gateway: str, admin: str, base_db: Any,
                                 per_payment: Counter, charged_orders: Counter, deadline: float) -> None:
    """Every charged order ends confirmed and paid (webhooks and retries may still be landing)."""
    async def settled() -> bool:
        current = {str(o["_id"]): o for o in base_db["orders"].find(LIVE)}
        return all((current[o]["status"], current[o]["paymentStatus"]) == ("confirmed", "paid")
                   for o in charged_orders)
    while not await settled():
        assert time.monotonic() < deadline + 60, "a charged order never became confirmed and paid"
        for pid in per_payment:  # what a client (or ops) does: ask the provider
            await until_done(http, "GET", f"{gateway}/api/payments/verify/{pid}", None,
                             {"Authorization": f"Bearer {admin}"}, time.monotonic() + 10)
        await asyncio.sleep(0.2)


async def _stock_balances(base_db: Any, product_id: str, deadline: float) -> None:
    """Interrupted creations are finished or undone by alarm: the stock adds up exactly."""
    def balanced() -> bool:
        doc = base_db["products"].find_one({"_id": ObjectId(product_id)})
        live = [o for o in base_db["orders"].find(LIVE) if o["status"] != "cancelled"]
        return doc["stock"] >= 0 and doc["stock"] + sum(i["quantity"] for o in live for i in o["items"]) == STOCK
    while not balanced():
        assert time.monotonic() < deadline + 90, "stock leaked or oversold"
        await asyncio.sleep(0.2)
