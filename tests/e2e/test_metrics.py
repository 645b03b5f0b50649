"""/metrics of a real `wrangler dev` session, read with Prometheus's own text parser: traffic of
each kind (reads, errors, orders placed and refused, cached reads, refusals by the rate limits)
shows up under the route's template, the worker and the class, with exact counts."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp
from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import JWT_KEY

API, GATEWAY = "rest-shop-api", "rest-shop-gateway"
LIMITS = "base.read=100000/60,base.write=100000/60,payments.write=2/60"


class Scrape:
    """One scrape, parsed: `value(name, **labels)` is the sample with exactly those labels (0 if absent)."""

    def __init__(self, text: str) -> None:
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v
                                                                         for k, v in labels.items())]
        return sum(found)

    def label_values(self) -> set[str]:
        return {value for sample in self.samples for value in sample.labels.values()}


async def scrape(http: aiohttp.ClientSession, url: str) -> Scrape:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Scrape(await resp.text())


async def _traffic_of_every_kind(http: aiohttp.ClientSession, gateway: str, admin: dict[str, str],
                                 shopper: dict[str, str], missing: str) -> str:
    """404s, an order sold and one refused, a cache miss then hit, and a rate-limited payment."""
    async with http.post(f"{gateway}/api/products", json={"name": "Last one", "price": 5, "stock": 1},
                         headers=admin) as resp:
        assert resp.status == 201
        product = (await resp.json())["_id"]
    for _ in range(3):
        async with http.get(f"{gateway}/api/products/{missing}") as resp:
            assert resp.status == 404
    for expected in (201, 409):  # the last one sells; the next is refused: insufficient stock
        async with http.post(f"{gateway}/api/orders", json={"productId": product, "quantity": 1},
                             headers=shopper) as resp:
            assert resp.status == expected, await resp.text()
    for expected in ("MISS", "HIT"):
        async with http.get(f"{gateway}/api/products") as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == expected
    statuses = []
    for _ in range(3):  # payments.write allows 2 a minute: the third is refused at the edge
        async with http.post(f"{gateway}/api/payments/initiate", json={}, headers=shopper) as resp:
            statuses.append(resp.status)
    assert statuses[2] == 429 and all(400 <= s < 500 and s != 429 for s in statuses[:2]), statuses
    return product


async def test_traffic_of_every_kind_is_counted_by_route_template_and_class(dev_process: Any, tmp_path: Path,
                                                                            mongo_uri: str) -> None:
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    db = MongoClient(mongo_uri)[db_name]
    admin = {"Authorization": f"Bearer {mint_token(db, JWT_KEY, 'admin')}"}
    shopper = {"Authorization": f"Bearer {mint_token(db, JWT_KEY, 'user')}"}
    process = dev_process("--port", "0", "--persist-to", str(tmp_path / "state"), "--var", f"MONGODB_DB:{db_name}",
                          "--var", f"RATE_LIMITS:{LIMITS}", extra_env={"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY})
    gateway, metrics = process.urls[GATEWAY], process.urls["metrics"]
    missing = str(ObjectId())
    async with aiohttp.ClientSession() as http:
        product = await _traffic_of_every_kind(http, gateway, admin, shopper, missing)
        seen = await scrape(http, metrics)

    requests = "workers_requests_total"
    assert seen.value(requests, worker=API, route="/products/<product_id>", method="GET", status="4xx") == 3
    assert seen.value(requests, worker=API, route="/orders", method="POST", status="2xx") == 1
    assert seen.value(requests, worker=API, route="/orders", method="POST", status="4xx") == 1
    assert seen.value(requests, worker=GATEWAY, route="/*", method="GET", status="4xx") == 3
    assert seen.value(requests, worker=GATEWAY, route="/payments/*", method="POST", status="4xx") == 3
    assert missing not in seen.label_values() and product not in seen.label_values()  # templates, never ids

    # wall and CPU time: one observation per request; the CPU is some, and never more than the wall
    cpu = {"worker": API, "route": "/products/<product_id>", "method": "GET"}
    assert seen.value("workers_request_cpu_seconds_count", **cpu) == 3
    assert seen.value("workers_request_duration_seconds_count", **cpu) == 3
    assert 0 < seen.value("workers_request_cpu_seconds_sum", **cpu) <= seen.value(
        "workers_request_duration_seconds_sum", **cpu)
    assert seen.value("workers_requests_in_flight", worker=API) == 0

    # the gateway's calls to the base service (the cache's hit made none), its cache and limits
    assert seen.value("workers_service_binding_calls_total", worker=GATEWAY, service=API, outcome="ok") == 1 + 3 + 2 + 1
    assert seen.value("gateway_cache_requests_total", outcome="miss") == 3 + 1  # the 404s, then the list
    assert seen.value("gateway_cache_requests_total", outcome="hit") == 1
    assert seen.value("gateway_rate_limited_total", service="payments", route_class="write") == 1
    assert seen.value("gateway_circuit_state", service="base", state="closed") == 1

    # Durable Objects: the order's lock and the product's stock ran, wrote and committed
    assert seen.value("durable_object_invocations_total", worker=API, **{"class": "OrderLock"}, kind="rpc") == 2
    assert seen.value("durable_object_storage_writes_total", worker=API, **{"class": "OrderLock"}) > 0
    assert seen.value("durable_object_storage_commit_duration_seconds_count", worker=API,
                      **{"class": "ProductStock"}) > 0
    assert seen.value("durable_object_instances", worker=API, **{"class": "ProductStock"}) == 1

    # the shop's own figures, and the database as the driver sees it
    assert seen.value("shop_orders_created_total") == 1
    assert seen.value("shop_orders_refused_total", reason="insufficient_stock") == 1
    assert seen.value("mongodb_command_duration_seconds_count", command="insert") >= 1  # the order
    assert seen.value("mongodb_up", worker=API) == 1
