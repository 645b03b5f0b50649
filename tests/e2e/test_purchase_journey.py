"""A shop's whole journey on `wrangler dev` exactly as a new user runs it (no MONGODB_URI, no
keys: embedded database, local payment providers), through the gateway: signup → login → the
documented admin command → admin creates products → orders → pay with Stripe, PayPal and
M-Pesa → the providers' webhooks/callbacks → every order confirmed and paid."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT
from tests.polling import eventually

pytestmark = pytest.mark.slow


class Client:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def call(self, method: str, path: str, body: Any = None, token: str | None = None,
                   **headers: str) -> tuple[int, Any]:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, json=body,
                                     headers={k.replace("_", "-"): v for k, v in headers.items()}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def until_paid(self, order_id: str, token: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            status, order = await self.call("GET", f"/api/orders/{order_id}", token=token)
            if (order["status"], order["paymentStatus"]) == ("confirmed", "paid") or time.monotonic() > deadline:
                return order
            await asyncio.sleep(0.05)

    async def until_payments_settle(self, token: str, count: int) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            status, history = await self.call("GET", "/api/payments/history", token=token)
            assert status == 200
            settled = [p for p in history["payments"] if p["status"] not in ("pending", "requires_action")]
            if len(settled) == count or time.monotonic() > deadline:
                return history
            await asyncio.sleep(0.05)


async def test_signup_to_paid_orders_with_every_provider(dev_process, tmp_path: Path) -> None:
    state = tmp_path / "state"
    dev = dev_process("--port", "0", "--persist-to", str(state), "--var", "RETURN_URL_ORIGINS:https://shop.example",
                      extra_env={
        "MONGODB_URI": None, "JWT_KEY": None, "SERVICE_AUTH_KEY": None, "STRIPE_SECRET_KEY": None,
        "PAYPAL_CLIENT_ID": None, "MPESA_CONSUMER_KEY": None})
    async with aiohttp.ClientSession() as http:
        shop = Client(http, dev.ready_url.rstrip("/"))
        admin, buyer = await _owner_and_buyer(shop, http, dev, state)
        status, usd = await shop.call("POST", "/api/products", {"name": "Kettle", "price": 24.5, "stock": 10},
                                      token=admin)
        assert status == 201
        status, kes = await shop.call("POST", "/api/products", {"name": "Chai", "price": 150, "stock": 10,
                                                                "currency": "KES"}, token=admin)
        assert status == 201
        assert (await shop.call("POST", "/api/products", {"name": "Nope", "price": 1}, token=buyer))[0] == 403

        async def order(product: dict[str, Any], quantity: int) -> str:
            status, body = await shop.call("POST", "/api/orders", {"productId": product["_id"],
                                                                   "quantity": quantity}, token=buyer)
            assert status == 201 and body["createdOrder"]["status"] == "pending"
            return body["createdOrder"]["_id"]

        async def pay(order_id: str, method: str, key: str, **data: str) -> dict[str, Any]:
            status, body = await shop.call("POST", "/api/payments/initiate",
                                           {"orderId": order_id, "paymentMethod": method, "paymentData": data},
                                           token=buyer, Idempotency_Key=key)
            assert status == 201, body
            return body

        card = await order(usd, 2)
        paid = await pay(card, "card", "buy-card", paymentMethodId="pm_card_visa")
        assert paid["payment"]["amount"] == 49.0 and paid["payment"]["currency"] == "USD"

        paypal_order = await order(usd, 1)
        started = await pay(paypal_order, "paypal", "buy-paypal", returnUrl="https://shop.example/ok",
                            cancelUrl="https://shop.example/cancel")
        async with http.get(started["paymentDetails"]["approvalUrl"], allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith("https://shop.example/ok")

        mpesa_order = await order(kes, 3)
        pushed = await pay(mpesa_order, "mpesa", "buy-mpesa", phoneNumber="0712 345 678")
        assert pushed["payment"]["currency"] == "KES" and pushed["paymentDetails"]["customerMessage"]

        for order_id in (card, paypal_order, mpesa_order):
            final = await shop.until_paid(order_id, buyer)
            assert (final["status"], final["paymentStatus"]) == ("confirmed", "paid"), final
        # the order is marked paid first, the payment record just after (a refusal there means a
        # refund instead): the record follows within moments
        history = await shop.until_payments_settle(buyer, 3)
        assert sorted(p["status"] for p in history["payments"]) == ["succeeded"] * 3
        status, product = await shop.call("GET", f"/api/products/{usd['_id']}", token=admin)  # past the cache
        assert status == 200 and product["stock"] == 10 - 3


async def _owner_and_buyer(shop: Client, http: aiohttp.ClientSession, dev: Any, state: Path) -> tuple[str, str]:
    """Both sign up, the owner is promoted with the admin CLI, both log in, and the buyer confirms
    the address from the mail the banner says where to read."""
    for email in ("owner@shop.example", "buyer@shop.example"):
        status, body = await shop.call("POST", "/api/user/signup", {"email": email, "password": "correct horse"})
        assert status == 201 and body["user"]["role"] == "user"
    promoted = subprocess.run([sys.executable, "-m", "base.admin", "promote", "owner@shop.example",
                               "--persist-to", str(state)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    assert promoted.returncode == 0, promoted.stderr
    tokens = {}
    for email in ("owner@shop.example", "buyer@shop.example"):
        status, body = await shop.call("POST", "/api/user/login", {"email": email, "password": "correct horse"})
        assert status == 200 and body["message"] == "Auth successful"
        tokens[email] = body["token"]
    admin, buyer = tokens["owner@shop.example"], tokens["buyer@shop.example"]
    # the banner says where captured mail is read; the buyer confirms the address from it
    async def mailed() -> list[dict[str, Any]]:
        async with http.get(dev.urls["mailbox"], params={"to": "buyer@shop.example"}) as resp:
            return (await resp.json())["messages"]
    mails = await eventually(mailed)
    link = re.search(r"/account/verify-email#token=([\w-]+)", mails[0]["text"]) if mails else None
    assert link, mails
    assert (await shop.call("POST", "/api/user/verify-email", {"token": link.group(1)}, token=buyer))[0] == 200
    status, me = await shop.call("GET", "/api/user/me", token=buyer)
    assert status == 200 and me["emailVerified"] is True
    return admin, buyer
