"""Hypothesis: random create / pay / fail / cancel / advance sequences on a few products.

Against the real OrderLock objects and the embedded MongoDB, every outcome must match a simple
model, only legal transitions may happen, and `stock + reserved-or-sold == initial` always holds.
"""
from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pymongo import MongoClient

from base.stores.products import ProductStore
from durable.mongo_pool import pooled_database as database
from durable.runtime import Runtime
from models.errors_domain import Conflict, InsufficientStock
from models.orders import TRANSITIONS
from tests.conftest import BASE_TOML, JWT_KEY, with_vars

INITIAL = 5
PRICE_MINOR = 250


def test_order_lifecycle_matches_model(mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("JWT_KEY", JWT_KEY)
    db_name = f"t_{uuid.uuid4().hex[:16]}"
    loop = asyncio.new_event_loop()
    runtime = Runtime([with_vars(BASE_TOML, MONGODB_DB=db_name, ORDER_PAYMENT_TIMEOUT_S=3600, SIGNIN_PROVIDERS="")],
                      persist_to=tmp_path / "state")
    loop.run_until_complete(runtime.start())
    env = runtime.workers["rest-shop-api"].env
    db = MongoClient(mongo_uri)[db_name]

    world = SimpleNamespace(loop=loop, env=env, db=db)

    try:
        run_state_machine_as_test(lambda: OrderMachine(world), settings=settings(
            max_examples=20, stateful_step_count=15, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    finally:
        loop.run_until_complete(runtime.close())
        loop.close()
        MongoClient(mongo_uri).drop_database(db_name)


class OrderMachine(RuleBasedStateMachine):
    def __init__(self, world: Any) -> None:
        super().__init__()
        self.world = world
        self.orders: dict[str, dict] = {}
        self.products = [self.run(self._product(i)) for i in range(2)]

    def run(self, coro):
        return self.world.loop.run_until_complete(coro)

    async def _product(self, i: int) -> str:
        store = ProductStore(await database(self.world.env))
        created = await store.create({"name": f"P{i}", "price": Decimal(PRICE_MINOR) / 100, "currency": "USD",
                                      "description": "", "category": "t", "stock": INITIAL, "sku": None,
                                      "isActive": True, "productImage": None})
        return created["_id"]

    def stub(self, order_id: str):
        return self.world.env.ORDER_LOCK.get(self.world.env.ORDER_LOCK.id_from_name(order_id))

    def available(self, product_id: str) -> int:
        return INITIAL - sum(o["items"].get(product_id, 0) for o in self.orders.values()
                             if o["status"] != "cancelled")

    def attempt(self, order_id: str, call, allowed: bool, new_status: str | None):
        if allowed:
            result = self.run(call)
            if new_status is not None:
                self.orders[order_id]["status"] = new_status
            assert result["status"] == self.orders[order_id]["status"]
            return result
        with pytest.raises(Conflict):
            self.run(call)

    @rule(first=st.integers(0, 1), qty=st.integers(1, 4), both=st.booleans(), qty2=st.integers(1, 3))
    def create(self, first: int, qty: int, both: bool, qty2: int) -> None:
        items = {self.products[first]: qty}
        if both:
            items[self.products[1 - first]] = qty2
        order_id = str(ObjectId())
        spec = {"orderId": order_id, "userId": "u", "currency": None, "shippingAddress": None,
                "items": [{"productId": p, "quantity": q} for p, q in items.items()]}
        fits = all(self.available(p) >= q for p, q in items.items())
        if fits:
            created = self.run(self.stub(order_id).create(spec, capped=False))  # the unpaid cap: test_base_orders
            assert created["status"] == "pending"
            self.orders[order_id] = {"status": "pending", "items": items, "paid": False}
        else:
            with pytest.raises(InsufficientStock):
                self.run(self.stub(order_id).create(spec, capped=False))

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def pay(self, data) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        order = self.orders[order_id]
        total = PRICE_MINOR * sum(order["items"].values())
        allowed = order["status"] == "pending" and not order["paid"]
        self.attempt(order_id, self.stub(order_id).mark_paid(str(ObjectId()), total, "USD"), allowed, "confirmed")
        if allowed:
            order["paid"] = True

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def fail_payment(self, data) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        self.attempt(order_id, self.stub(order_id).mark_payment_failed(str(ObjectId())), True, None)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        status = self.orders[order_id]["status"]
        allowed = status == "cancelled" or "cancelled" in TRANSITIONS[status]
        self.attempt(order_id, self.stub(order_id).cancel(), allowed, "cancelled")

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), to=st.sampled_from(["confirmed", "processing", "shipped", "delivered"]))
    def advance(self, data, to: str) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.orders)))
        allowed = to in TRANSITIONS[self.orders[order_id]["status"]]
        self.attempt(order_id, self.stub(order_id).set_status(to), allowed, to)

    @invariant()
    def stock_is_conserved_and_holds_match(self) -> None:
        for product_id in self.products:
            doc = self.world.db["products"].find_one({"_id": ObjectId(product_id)})
            ns = self.world.env.PRODUCT_STOCK
            snapshot = self.run(ns.get(ns.id_from_name(product_id)).snapshot(product_id))
            assert doc["stock"] == snapshot["stock"] >= 0  # the read model agrees with the authority
            assert doc["stock"] == self.available(product_id)
            holding = sorted(oid for oid, o in self.orders.items()  # paid or delivered: sold, no hold
                             if product_id in o["items"] and o["status"] not in ("cancelled", "delivered")
                             and not o["paid"])
            assert sorted(h["o"] for h in snapshot["holds"]) == holding

    @invariant()
    def read_model_agrees(self) -> None:
        for order_id, order in self.orders.items():
            assert self.world.db["orders"].find_one({"_id": ObjectId(order_id)})["status"] == order["status"]
