"""Database commands per operation, counted for real: a pymongo CommandListener attributes each
command to the request whose code issued it (by the request id in its context), so background
work (webhooks, sweeps) is never mixed in. Budgets: a card payment ≤ 5, an order ≤ 3, a webhook
that settles a payment ≤ 4 (steady state: the caller's session is already known)."""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pymongo import monitoring

from durable.observe import tracing
from tests.polling import eventually
from tests.shop_flows import local_stripe, order_state

BUDGETS = {"order": 3, "card_payment": 5, "webhook_settles": 4}


class PerRequest(monitoring.CommandListener):
    """Counts commands by the request id current where each was issued."""

    def __init__(self) -> None:
        self.commands: dict[str, list[str]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        trace = tracing.current()
        if trace is not None and event.command_name not in ("endSessions", "hello", "isMaster", "ping"):
            self.commands.setdefault(trace.request_id, []).append(f"{event.command_name} {event.database_name}")

    def succeeded(self, event: Any) -> None: ...
    def failed(self, event: Any) -> None: ...


@pytest.fixture
def counted() -> PerRequest:
    listener = PerRequest()
    monitoring.register(listener)  # clients created from now on (the shop's MongoPools) report to it
    yield listener
    monitoring._LISTENERS.command_listeners.remove(listener)  # noqa: SLF001  (pymongo has no unregister)


@pytest.fixture
async def budget_shop(counted: PerRequest, custom_shop: Any) -> Any:
    return await custom_shop(payments_vars={"RECONCILE_EVERY_S": 3600})


async def test_database_commands_per_operation_stay_within_budget(budget_shop: Any, counted: PerRequest) -> None:
    shop = budget_shop
    user = shop.token()
    product = await shop.product(price=12.5, stock=100)
    assert (await shop.call("GET", "/api/orders", token=user))[0] == 200  # the session is known from now on
    assert (await shop.call("GET", "/api/payments/history", token=user))[0] == 200

    status, body, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"]}, token=user,
                                      headers={"X-Request-Id": "budget-order"})
    assert status == 201
    order_id = body["createdOrder"]["_id"]
    status, body, _ = await shop.call(
        "POST", "/api/payments/initiate", {"orderId": order_id, "paymentMethod": "card",
                                           "paymentData": {"paymentMethodId": "pm_card_visa"}},
        token=user, headers={"X-Request-Id": "budget-pay", "Idempotency-Key": "budget-1"})
    assert status == 201 and body["payment"]["status"] == "succeeded"

    # a browser-confirmed intent is settled by its webhook: count that delivery's commands
    second = (await shop.call("POST", "/api/orders", {"productId": product["_id"]}, token=user))[1]["createdOrder"]
    started = (await shop.call("POST", "/api/payments/initiate", {"orderId": second["_id"], "paymentMethod": "card"},
                               token=user, headers={"Idempotency-Key": "budget-2"}))[1]
    before = set(counted.commands)
    import aiohttp
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{local_stripe().url}/v1/payment_intents/{started['payment']['transactionId']}/confirm",
                             data={"payment_method": "pm_card_visa"},
                             headers={"Authorization": f"Bearer {local_stripe().api_key}"}) as resp:
            assert resp.status == 200
    assert await eventually(lambda: _paid(shop, user, second["_id"]))
    await local_stripe().quiesce()
    webhooks = [commands for rid, commands in counted.commands.items() if rid not in before]
    settling = max(webhooks, key=len)

    used = {"order": counted.commands["budget-order"], "card_payment": counted.commands["budget-pay"],
            "webhook_settles": settling}
    print({name: Counter(commands) for name, commands in used.items()})
    for name, budget in BUDGETS.items():
        assert len(used[name]) <= budget, (name, used[name])


async def _paid(shop: Any, user: str, order_id: str) -> bool:
    return await order_state(shop, user, order_id) == ("confirmed", "paid")


