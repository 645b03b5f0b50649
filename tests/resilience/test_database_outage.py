"""The database goes away mid-traffic and comes back: reads and writes answer 503
`database_unavailable` within the configured timeout, /health says degraded with the pool's
last error, nothing is half-written, and the shop recovers by itself when the server returns."""
from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.conftest import open_full_shop, shop_environment
from wrangler.embedded_mongo import EmbeddedMongo

pytestmark = pytest.mark.slow
TIMEOUT_MS = 800


async def test_database_outage_is_503_then_recovers_with_nothing_lost(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    mongo = EmbeddedMongo(tmp_path / "mongo")
    uri = await mongo.start()
    shop_environment(monkeypatch, uri)
    fast = {"MONGODB_TIMEOUT_MS": TIMEOUT_MS}
    try:
        async with open_full_shop(tmp_path, uri, base_vars=fast, payments_vars=fast) as shop:
            shop.http._timeout = aiohttp.ClientTimeout(total=TIMEOUT_MS / 1000 * 6)  # a hang fails the test
            product = await shop.product(name="Tea", price=3, stock=20)
            buyer = shop.token(user_id=str(ObjectId()))
            before = [await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": 1},
                                      token=buyer) for _ in range(3)]
            assert [s for s, _, _ in before] == [201] * 3

            await asyncio.to_thread(mongo.stop)
            attempts = [("GET", f"/api/products/{product['_id']}", None, {"Cache-Control": "no-cache"}),
                        ("POST", "/api/orders", {"productId": product["_id"], "quantity": 2}, {}),
                        ("POST", "/api/user/signup", {"email": "late@example.com", "password": "password123"}, {}),
                        ("GET", "/api/payments/history", None, {})]
            for method, path, body, headers in attempts:
                started = asyncio.get_running_loop().time()
                status, reply, response_headers = await shop.call(method, path, body, token=buyer, headers=headers)
                assert status == 503 and reply["error"]["code"] == "database_unavailable", (path, status, reply)
                assert response_headers["Retry-After"]
                if method == "POST" and path == "/api/orders":  # the first read found the server gone: an
                    # order does not wait out the timeout for a stock read model the alarm writes later
                    waited = asyncio.get_running_loop().time() - started
                    assert waited < TIMEOUT_MS / 1000, f"the order waited {waited:.2f} s for a database known down"
            status, health, _ = await shop.call("GET", "/health")
            assert status == 503 and health["services"]["base"]["status"] == "degraded"
            assert health["services"]["base"]["database"]["status"] == "disconnected"
            assert health["services"]["base"]["database"]["pool"]["last_error"]

            await asyncio.to_thread(mongo.spawn)  # the same server, same port, same data
            deadline = asyncio.get_running_loop().time() + 30
            while (await shop.call("GET", "/health"))[0] != 200:
                assert asyncio.get_running_loop().time() < deadline, "never recovered"
                await asyncio.sleep(0.1)
            status, after, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": 1},
                                               token=buyer)
            assert status == 201
            db = MongoClient(uri)[shop.db_name]
            orders = list(db["orders"].find({"userId": after["createdOrder"]["userId"]}))
            assert len(orders) == 4 and all(o["status"] == "pending" for o in orders)  # none lost, none half-made
            stock = db["products"].find_one({"_id": ObjectId(product["_id"])})["stock"]
            assert stock == 20 - sum(i["quantity"] for o in orders for i in o["items"])
    finally:
        await asyncio.to_thread(mongo.stop)
