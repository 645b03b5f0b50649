"""PayPal end to end through the gateway, against the local PayPal (Orders v2) server: approval,
capture on the signed webhook, verify without webhooks, declines, forgeries, replays, refunds."""
from __future__ import annotations

import aiohttp
from yarl import URL

from payments.providers import registry
from tests.polling import eventually
from tests.shop_flows import initiate, order_state, payment_reaches, setup_order

URLS = {"returnUrl": "https://shop.example/paid", "cancelUrl": "https://shop.example/cancelled"}


def local_paypal():
    return registry.local_servers["paypal"]


async def approve(url: str, decline: bool = False) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + ("&decline=1" if decline else ""), allow_redirects=False) as resp:
            assert resp.status == 302
            return resp.headers["Location"]


async def test_paypal_approval_then_capture_pays_the_order(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop, price=12.5, quantity=2)
    status, body, _ = await initiate(shop, user, order_id, "pp-1", "paypal", **URLS)
    assert status == 201 and body["payment"]["status"] == "requires_action"
    assert body["payment"]["provider"] == "paypal" and body["paymentDetails"]["approvalUrl"].startswith("http://")
    back = URL(await approve(body["paymentDetails"]["approvalUrl"]))  # as PayPal: token and PayerID added
    assert str(back.with_query(None)) == URLS["returnUrl"]
    assert back.query["token"] == URL(body["paymentDetails"]["approvalUrl"]).query["token"] and back.query["PayerID"]
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    assert [(e["type"], e["amount"], e["currency"]) for e in local_paypal().ledger] == [("charge", 2500, "USD")]
    assert await payment_reaches(shop, user, body["payment"]["_id"], "succeeded")


async def _state_is(shop, user, order_id, expected) -> bool:
    return await order_state(shop, user, order_id) == expected


async def test_verify_captures_an_approved_order_without_webhooks(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    body = (await initiate(shop, user, order_id, "pp-2", "paypal", **URLS))[1]
    local_paypal().webhooks.clear()
    await approve(body["paymentDetails"]["approvalUrl"])
    status, verified, _ = await shop.call("GET", f"/api/payments/verify/{body['payment']['_id']}", token=user)
    assert status == 200 and verified["payment"]["status"] == "succeeded"
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")
    again = await shop.call("GET", f"/api/payments/verify/{body['payment']['_id']}", token=user)
    assert again[1]["payment"]["status"] == "succeeded"
    assert len([e for e in local_paypal().ledger if e["type"] == "charge"]) == 1


async def test_declined_capture_fails_the_payment(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    body = (await initiate(shop, user, order_id, "pp-3", "paypal", **URLS))[1]
    await approve(body["paymentDetails"]["approvalUrl"], decline=True)
    assert await eventually(lambda: _state_is(shop, user, order_id, ("pending", "failed")))
    assert local_paypal().ledger == []


async def test_forged_and_replayed_paypal_webhooks(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    body = (await initiate(shop, user, order_id, "pp-4", "paypal", **URLS))[1]
    await approve(body["paymentDetails"]["approvalUrl"])
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    paypal = local_paypal()
    completed = next(e for e, ev in paypal.events.items() if ev["event_type"] == "PAYMENT.CAPTURE.COMPLETED")

    async def delivered() -> bool:  # the automatic delivery is done: what follows is a true replay
        return paypal.deliveries.get(completed) == 200
    assert await eventually(delivered)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{paypal.url}/_local/events/{completed}/deliver", json={}) as resp:
            assert (await resp.json())["delivered"] == 200   # a duplicate: applied once only
        async with http.post(f"{paypal.url}/_local/events/{completed}/deliver", json={"age_s": 900}) as resp:
            assert (await resp.json())["delivered"] == 400   # stale transmission
    forged = {"PAYPAL-AUTH-ALGO": "SHA256withRSA", "PAYPAL-CERT-URL": "https://evil.example/cert",
              "PAYPAL-TRANSMISSION-ID": "abc", "PAYPAL-TRANSMISSION-SIG": "Zm9yZ2Vk",
              "PAYPAL-TRANSMISSION-TIME": "2026-01-01T00:00:00+00:00"}
    status, reply, _ = await shop.call("POST", "/api/payments/webhooks/paypal", json=paypal.events[completed],
                                       headers=forged)
    assert status == 400 and reply["error"]["code"] == "invalid_signature"
    assert len([e for e in paypal.ledger if e["type"] == "charge"]) == 1


async def test_paypal_refunds(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop, price=10, quantity=2)
    body = (await initiate(shop, user, order_id, "pp-5", "paypal", **URLS))[1]
    await approve(body["paymentDetails"]["approvalUrl"])
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    admin = shop.token("admin")
    path = f"/api/payments/{body['payment']['_id']}/refund"
    status, partial, _ = await shop.call("POST", path, {"amount": 5}, token=admin, headers={"Idempotency-Key": "p1"})
    assert status == 200 and partial["payment"]["status"] == "partially_refunded"
    status, full, _ = await shop.call("POST", path, {}, token=admin, headers={"Idempotency-Key": "p2"})
    assert status == 200 and full["payment"]["status"] == "refunded" and full["payment"]["refundedAmount"] == 20
    assert [e["amount"] for e in local_paypal().ledger if e["type"] == "refund"] == [500, 1500]
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "refunded")))


async def test_a_return_url_off_our_origins_is_refused_and_starts_nothing(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop, price=3, quantity=1)
    status, body, _ = await initiate(shop, user, order_id, "pp-evil", "paypal",
                                     returnUrl="https://evil.example/phish", cancelUrl=URLS["cancelUrl"])
    assert status == 422 and body["error"]["code"] == "return_url_not_allowed"
    assert not local_paypal().orders  # no PayPal order was created for it
    assert await order_state(shop, user, order_id) == ("pending", "pending")
