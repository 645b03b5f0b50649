"""Hypothesis: random interleavings of payment traffic against the whole shop (gateway, base,
payments, the local Stripe server) must keep the money invariants.

Steps: initiate with fresh or reused Idempotency-Keys and same or different bodies, bursts of
concurrent duplicates, the customer confirming a client-side intent, webhook redeliveries
(duplicate, late, stale), verify, refunds, and Durable Object restarts. After every step:
at most one charge per payment record, every charge has a record of the same amount, an order is
paid at most once and never for the wrong amount, replays are byte-identical, mismatches are 422.
PAYMENTS_MODEL_EXAMPLES=100 runs a deeper search than the suite's default.
"""
from __future__ import annotations

import asyncio
import json
import os
from collections import Counter, defaultdict
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
    rule,
    run_state_machine_as_test,
)
from pymongo import MongoClient

from payments.providers import registry
from tests.conftest import open_full_shop, shop_environment

KEYS = ["k1", "k2", "k3"]
CARDS = ["pm_card_visa", "pm_card_chargeDeclined", None]  # None: client-side confirmation (clientSecret)
PICK = st.integers(0, 63)  # which of the example's payments/intents/events (modulo how many exist)
RECORDED = {200, 201, 402, 404, 409}  # final answers; a 400/422/5xx lets a corrected retry run afresh
NOT_RECORDED = {"idempotency_in_progress", "provider_unavailable"}


def test_payment_traffic_keeps_the_money_invariants(mongo_uri: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    shop_environment(monkeypatch, mongo_uri)
    loop = asyncio.new_event_loop()
    opened = open_full_shop(tmp_path, mongo_uri)
    shop = loop.run_until_complete(opened.__aenter__())
    stripe = registry.local_servers["stripe"]
    pay_db = MongoClient(mongo_uri)[f"{shop.db_name}_pay"]
    base_db = MongoClient(mongo_uri)[shop.db_name]
    product = loop.run_until_complete(shop.product(price=12.5, stock=10_000))
    admin = shop.token("admin")

    world = SimpleNamespace(shop=shop, loop=loop, stripe=stripe, pay_db=pay_db, base_db=base_db, product=product, admin=admin)

    try:
        run_state_machine_as_test(lambda: PaymentMachine(world), settings=settings(
            max_examples=int(os.environ.get("PAYMENTS_MODEL_EXAMPLES", 40)), stateful_step_count=30, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    finally:
        loop.run_until_complete(opened.__aexit__(None, None, None))
        loop.close()


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self, world: Any) -> None:
        super().__init__()
        self.world = world
        self.users = [self.world.shop.token(user_id=str(ObjectId())) for _ in range(2)]
        self.orders: list[tuple[str, str]] = []  # (owner token, order id)
        for owner in (0, 0, 1):
            status, body, _ = self.run(self.world.shop.call("POST", "/api/orders", {"productId": self.world.product["_id"],
                                                                         "quantity": 1 + owner},
                                                 token=self.users[owner]))
            assert status == 201
            self.orders.append((self.users[owner], body["createdOrder"]["_id"]))
        self.recorded: dict[tuple[str, str], tuple[str, int, bytes]] = {}  # (token, key) → (body, status, raw)
        self.payments: list[tuple[str, str]] = []  # (owner token, payment id)
        self.secrets: list[str] = []
        self.old_events = set(self.world.stripe.events)  # earlier examples' events are not ours to replay

    def run(self, coro: Any) -> Any:
        """One step, then the provider's webhooks it caused: the invariants hold once those
        landed (a second intent confirmed in an old tab is refunded by its webhook)."""
        async def step() -> Any:
            result = await coro
            await self.world.stripe.quiesce()
            return result
        return self.world.loop.run_until_complete(step())

    async def post(self, token: str, path: str, body: dict[str, Any], key: str) -> tuple[int, bytes, Any]:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
        async with self.world.shop.http.post(self.world.shop.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.read(), resp.headers

    def check_idempotent(self, token: str, key: str, body: dict[str, Any], status: int, raw: bytes,
                         headers: Any, namespace: str = "") -> None:
        """The model of one (user, key): first final answer is recorded, then replayed or refused."""
        canonical = namespace + json.dumps(body, sort_keys=True)
        reply = json.loads(raw)
        code = reply.get("error", {}).get("code")
        assert status < 500 or code == "provider_unavailable", reply
        seen = self.recorded.get((token, key))
        if seen is not None and seen[0] != canonical:
            assert (status, code) == (422, "idempotency_key_mismatch")
        elif seen is not None:
            assert (status, raw) == seen[1:] and headers.get("Idempotent-Replayed") == "true"
        elif status in RECORDED and code not in NOT_RECORDED:
            self.recorded[(token, key)] = (canonical, status, raw)
            self.learn(token, reply)

    def learn(self, token: str, reply: dict[str, Any]) -> None:
        payment = reply.get("payment")
        if payment and (token, payment["_id"]) not in self.payments:
            self.payments.append((token, payment["_id"]))
        secret = (reply.get("paymentDetails") or {}).get("clientSecret")
        if secret:
            self.secrets.append(secret)

    @rule(order=st.integers(0, 2), key=st.sampled_from(KEYS), card=st.sampled_from(CARDS))
    def initiate(self, order: int, key: str, card: str | None) -> None:
        token, order_id = self.orders[order]
        body = {"orderId": order_id, "paymentMethod": "stripe",
                "paymentData": {"paymentMethodId": card} if card else {}}
        status, raw, headers = self.run(self.post(token, "/api/payments/initiate", body, key))
        self.check_idempotent(token, key, body, status, raw, headers)

    @rule(order=st.integers(0, 2), key=st.sampled_from(KEYS), card=st.sampled_from(CARDS),
          copies=st.integers(2, 6))
    def concurrent_duplicates(self, order: int, key: str, card: str | None, copies: int) -> None:
        token, order_id = self.orders[order]
        body = {"orderId": order_id, "paymentMethod": "stripe",
                "paymentData": {"paymentMethodId": card} if card else {}}
        async def burst() -> list[tuple[int, bytes, Any]]:
            return await asyncio.gather(*(self.post(token, "/api/payments/initiate", body, key)
                                          for _ in range(copies)))
        replies = self.run(burst())
        finals = {(status, raw) for status, raw, _ in replies
                  if json.loads(raw).get("error", {}).get("code") not in NOT_RECORDED}
        assert len(finals) <= 1, finals  # everyone who got an answer got the same one
        for status, raw, headers in sorted(replies, key=lambda r: r[2].get("Idempotent-Replayed") == "true"):
            if json.loads(raw).get("error", {}).get("code") == "idempotency_in_progress":
                continue  # a copy that arrived while the first was running: told to retry
            self.check_idempotent(token, key, body, status, raw, headers)

    @rule(pick=PICK, card=st.sampled_from(["pm_card_visa", "pm_card_chargeDeclined"]))
    def customer_confirms(self, pick: int, card: str) -> None:
        """What Stripe.js does in the browser with a clientSecret."""
        if not self.secrets:
            return
        intent_id = self.secrets[pick % len(self.secrets)].split("_secret_")[0]

        async def confirm() -> int:
            async with self.world.shop.http.post(f"{self.world.stripe.url}/v1/payment_intents/{intent_id}/confirm",
                                      data={"payment_method": card},
                                      headers={"Authorization": f"Bearer {self.world.stripe.api_key}"}) as resp:
                return resp.status
        assert self.run(confirm()) in (200, 400, 402)

    @rule(pick=PICK, age_s=st.sampled_from([0, 0, 400]))
    def redeliver_event(self, pick: int, age_s: int) -> None:
        mine = [e for e in self.world.stripe.events if e not in self.old_events]
        if not mine:
            return
        event_id = mine[pick % len(mine)]
        delivered = self.run(self.world.stripe.deliver_event(self.world.stripe.events[event_id], age_s=age_s))
        assert delivered in ((400,) if age_s > 300 else (200, 409))

    @rule(pick=PICK)
    def verify(self, pick: int) -> None:
        if not self.payments:
            return
        token, payment_id = self.payments[pick % len(self.payments)]
        status, body, _ = self.run(self.world.shop.call("GET", f"/api/payments/verify/{payment_id}", token=token))
        assert status == 200 and body["payment"]["_id"] == payment_id

    @rule(pick=PICK, amount=st.sampled_from([None, 5, 1000]), key=st.sampled_from(KEYS))
    def refund(self, pick: int, amount: int | None, key: str) -> None:
        if not self.payments:
            return
        _, payment_id = self.payments[pick % len(self.payments)]
        body = {} if amount is None else {"amount": amount}
        status, raw, headers = self.run(self.post(self.world.admin, f"/api/payments/{payment_id}/refund", body, key))
        self.check_idempotent(self.world.admin, key, body, status, raw, headers, namespace=payment_id)

    @rule()
    def restart_objects(self) -> None:
        """Every idle Durable Object instance is dropped; the next call rebuilds it from storage."""
        for worker in self.world.shop.runtime.workers.values():
            for host in worker.hosts.values():
                host.evict_idle(0)

    @invariant()
    def money_adds_up(self) -> None:
        ledger = list(self.world.stripe.ledger)
        records = {str(p["_id"]): p for p in self.world.pay_db["payments"].find()}
        charges = Counter(e["payment_id"] for e in ledger if e["type"] == "charge")
        refunded: dict[str, int] = defaultdict(int)
        for entry in ledger:
            if entry["type"] == "refund":
                refunded[entry["payment_id"]] += entry["amount"]
        for payment_id, count in charges.items():
            record = records.get(payment_id)
            assert record is not None, f"charge without a payment record: {payment_id}"
            assert count == 1, f"payment {payment_id} charged {count} times"
            charge = next(e for e in ledger if e["type"] == "charge" and e["payment_id"] == payment_id)
            assert charge["amount"] == record["amount_minor"]
            assert refunded[payment_id] <= charge["amount"]
        for token, order_id in self.orders:
            order = self.world.base_db["orders"].find_one({"_id": ObjectId(order_id)})
            mine = [p for p in records.values() if p["orderId"] == order_id]
            net = [str(p["_id"]) for p in mine
                   if charges[str(p["_id"])] and refunded[str(p["_id"])] < p["amount_minor"]]
            assert len(net) <= 1, f"order {order_id} charged by {net}"
            if order["paymentStatus"] == "paid":
                assert any(charges[str(p["_id"])] and p["amount_minor"] == order["total_minor"] for p in mine)
