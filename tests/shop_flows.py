"""Steps of a purchase that many payment tests take: an order to pay, a payment initiated through
the gateway, the states they reach; and the in-process local Stripe server's ledger."""
from __future__ import annotations

from typing import Any

from bson import ObjectId

from payments.providers import registry
from tests.polling import eventually


def local_stripe():
    return registry.local_servers["stripe"]


def charges() -> list[dict[str, Any]]:
    return [e for e in local_stripe().ledger if e["type"] == "charge"]


async def setup_order(shop, price: float = 19.99, quantity: int = 2) -> tuple[str, str, dict]:
    user = shop.token(user_id=str(ObjectId()))
    product = await shop.product(price=price, stock=100)
    status, body, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": quantity},
                                      token=user)
    assert status == 201
    return user, body["createdOrder"]["_id"], body["createdOrder"]


async def initiate(shop, token: str, order_id: str, key: str | None, method: str = "stripe",
                   headers: dict[str, str] | None = None, **data: Any):
    headers = {**(headers or {}), **({"Idempotency-Key": key} if key is not None else {})}
    return await shop.call("POST", "/api/payments/initiate",
                           {"orderId": order_id, "paymentMethod": method, "paymentData": data},
                           token=token, headers=headers)


async def order_state(shop, token: str, order_id: str) -> tuple[str, str]:
    status, order, _ = await shop.call("GET", f"/api/orders/{order_id}", token=token)
    assert status == 200
    return order["status"], order["paymentStatus"]


async def payment_reaches(shop, user, payment_id: str, status: str) -> dict:
    """The payment record once it shows `status`: the order and the record are two writes, so poll both."""
    async def check():
        got = (await shop.call("GET", f"/api/payments/{payment_id}", token=user))[1]
        return got["payment"] if got.get("payment", {}).get("status") == status else None
    return await eventually(check)
