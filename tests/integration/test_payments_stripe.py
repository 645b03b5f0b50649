"""Payments with Stripe, end to end through the gateway: the official library against the local
Stripe server, signed webhooks back through the gateway, idempotency, concurrency, refunds."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from bson import ObjectId

from durable import Request
from durable.asgi import asgi_fetch
from tests.polling import eventually
from tests.shop_flows import charges, initiate, local_stripe, order_state, payment_reaches, setup_order


async def test_card_payment_end_to_end(full_shop) -> None:
    shop = full_shop
    user, order_id, order = await setup_order(shop)
    status, body, _ = await initiate(shop, user, order_id, "k-1", paymentMethodId="pm_card_visa")
    assert status == 201 and body["message"] == "Payment initiated successfully"
    payment = body["payment"]
    assert payment["status"] == "succeeded" and payment["amount"] == 39.98 and payment["currency"] == "USD"
    assert payment["orderId"] == order_id and payment["transactionId"].startswith("pi_")
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")
    assert [(c["amount"], c["currency"]) for c in charges()] == [(3998, "usd")]  # from the order, never the client
    status, got, _ = await shop.call("GET", f"/api/payments/{payment['_id']}", token=user)
    assert status == 200 and got["payment"]["status"] == "succeeded"
    status, history, _ = await shop.call("GET", "/api/payments/history", token=user)
    assert history["total"] == 1 and history["payments"][0]["_id"] == payment["_id"]
    status, other, _ = await shop.call("GET", f"/api/payments/{payment['_id']}", token=shop.token())
    assert status == 404


async def test_client_side_confirmation_is_settled_by_the_signed_webhook(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    status, body, _ = await initiate(shop, user, order_id, "k-2")
    assert status == 201 and body["payment"]["status"] == "requires_action"
    secret = body["paymentDetails"]["clientSecret"]
    intent_id = secret.split("_secret_")[0]
    async with aiohttp.ClientSession() as http:  # what Stripe.js does in the customer's browser
        async with http.post(f"{local_stripe().url}/v1/payment_intents/{intent_id}/confirm",
                             data={"payment_method": "pm_card_visa"},
                             headers={"Authorization": f"Bearer {local_stripe().api_key}"}) as resp:
            assert resp.status == 200
    assert await eventually(lambda: _paid(shop, user, order_id))
    assert await payment_reaches(shop, user, body["payment"]["_id"], "succeeded")


async def _paid(shop, user, order_id) -> bool:
    return await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_declined_card_is_402_recorded_and_a_new_key_can_pay(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    first = await initiate(shop, user, order_id, "k-3", paymentMethodId="pm_card_chargeDeclined")
    assert first[0] == 402 and first[1]["error"]["code"] == "payment_declined"
    assert await order_state(shop, user, order_id) == ("pending", "failed")
    replay = await initiate(shop, user, order_id, "k-3", paymentMethodId="pm_card_chargeDeclined")
    assert replay[0] == 402 and replay[1] == first[1] and replay[2]["Idempotent-Replayed"] == "true"
    assert (await initiate(shop, user, order_id, "k-4", paymentMethodId="pm_card_visa"))[0] == 201
    assert await order_state(shop, user, order_id) == ("confirmed", "paid") and len(charges()) == 1


@pytest.mark.parametrize("fault", [{"status": 500}, {"delay_s": 1.6}])
async def test_provider_failure_is_503_and_the_retry_charges_once(full_shop, fault) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    async with aiohttp.ClientSession() as http:
        await (await http.post(f"{local_stripe().url}/_local/faults", json={**fault, "count": 1})).release()
    status, body, headers = await initiate(shop, user, order_id, "k-5", paymentMethodId="pm_card_visa")
    assert status == 503 and body["error"]["code"] == "provider_unavailable" and headers["Retry-After"]
    assert await order_state(shop, user, order_id) == ("pending", "pending")
    status, body, headers = await initiate(shop, user, order_id, "k-5", paymentMethodId="pm_card_visa")
    assert status == 201 and "Idempotent-Replayed" not in headers
    assert len(charges()) == 1 and await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_webhook_replays_forgeries_and_stale_events_change_nothing(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    await initiate(shop, user, order_id, "k-6", paymentMethodId="pm_card_visa")
    stripe = local_stripe()
    event_id = next(e for e, ev in stripe.events.items() if ev["type"] == "payment_intent.succeeded")

    async def delivered() -> bool:  # the automatic delivery is done: what follows is a true replay
        return stripe.deliveries.get(event_id) == 200
    assert await eventually(delivered)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stripe.url}/_local/events/{event_id}/deliver", json={}) as resp:
            assert (await resp.json())["delivered"] == 200
        async with http.post(f"{stripe.url}/_local/events/{event_id}/deliver", json={"age_s": 400}) as resp:
            assert (await resp.json())["delivered"] == 400  # outside the 300 s tolerance
    payload = json.dumps(stripe.events[event_id]).encode()
    for signature in ("t=1,v1=deadbeef", stripe.sign("whsec_wrong", payload), ""):
        status, body, _ = await shop.call("POST", "/api/payments/webhooks/stripe", data=payload,
                                          headers={"Stripe-Signature": signature, "Content-Type": "application/json"})
        assert status == 400 and body["error"]["code"] == "invalid_signature"
    assert await order_state(shop, user, order_id) == ("confirmed", "paid") and len(charges()) == 1


async def test_signed_event_with_the_wrong_amount_fails_the_payment(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    status, body, _ = await initiate(shop, user, order_id, "k-7")
    stripe = local_stripe()
    intent = dict(stripe.intents[body["payment"]["transactionId"]], status="succeeded", amount=1)
    event = {"id": "evt_forged_amount", "object": "event", "type": "payment_intent.succeeded",
             "created": int(time.time()), "data": {"object": intent}}
    payload = json.dumps(event).encode()
    status, reply, _ = await shop.call("POST", "/api/payments/webhooks/stripe", data=payload, headers={
        "Stripe-Signature": stripe.sign(stripe.endpoints[-1]["secret"], payload), "Content-Type": "application/json"})
    assert status == 200 and reply["outcome"] == "applied"
    assert await order_state(shop, user, order_id) == ("pending", "failed")
    status, got, _ = await shop.call("GET", f"/api/payments/{body['payment']['_id']}", token=user)
    assert got["payment"]["status"] == "failed" and "mismatch" in got["payment"]["failureReason"]


async def test_concurrent_deliveries_of_one_event_apply_it_once(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    status, body, _ = await initiate(shop, user, order_id, "k-7b")
    stripe = local_stripe()
    intent = dict(stripe.intents[body["payment"]["transactionId"]], status="succeeded")
    event = {"id": f"evt_{ObjectId()}", "object": "event", "type": "payment_intent.succeeded",
             "created": int(time.time()), "data": {"object": intent}}
    payload = json.dumps(event).encode()
    headers = {"Stripe-Signature": stripe.sign(stripe.endpoints[-1]["secret"], payload),
               "Content-Type": "application/json"}
    replies = await asyncio.gather(*(shop.call("POST", "/api/payments/webhooks/stripe", data=payload, headers=headers)
                                     for _ in range(20)))
    outcomes = Counter(reply["outcome"] if status == 200 else reply["error"]["code"] for status, reply, _ in replies)
    assert outcomes["applied"] == 1 and set(outcomes) <= {"applied", "duplicate", "event_in_progress"}, outcomes
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def _confirm_in_browser(intent_id: str, card: str) -> int:
    async with aiohttp.ClientSession() as http:  # what Stripe.js does with a clientSecret
        async with http.post(f"{local_stripe().url}/v1/payment_intents/{intent_id}/confirm",
                             data={"payment_method": card},
                             headers={"Authorization": f"Bearer {local_stripe().api_key}"}) as resp:
            return resp.status


async def test_a_second_intent_confirmed_after_the_order_is_paid_is_refunded_at_once(full_shop) -> None:
    """Declined in the browser, paid with a new key, then the old intent confirmed again: two
    charges reached Stripe for one order, so the late one is given back automatically."""
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    first = (await initiate(shop, user, order_id, "k-2a"))[1]
    intent_id = first["payment"]["transactionId"]
    assert await _confirm_in_browser(intent_id, "pm_card_chargeDeclined") == 402
    assert await payment_reaches(shop, user, first["payment"]["_id"], "failed")
    status, second, _ = await initiate(shop, user, order_id, "k-2b", paymentMethodId="pm_card_visa")
    assert status == 201 and await order_state(shop, user, order_id) == ("confirmed", "paid")
    assert await _confirm_in_browser(intent_id, "pm_card_visa") == 200  # the old tab, still open
    late = await payment_reaches(shop, user, first["payment"]["_id"], "refunded")
    assert late and "order not payable" in late["failureReason"] and late["refundedAmount"] == late["amount"]
    ledger = local_stripe().ledger
    assert [(e["type"], e["payment_id"]) for e in ledger if e["payment_id"] == first["payment"]["_id"]] == [
        ("charge", first["payment"]["_id"]), ("refund", first["payment"]["_id"])]
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_idempotency_key_rules(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    assert (await initiate(shop, user, order_id, None))[1]["error"]["code"] == "idempotency_key_required"
    assert (await initiate(shop, user, order_id, "x" * 256))[0] == 400
    bad = await initiate(shop, user, order_id, "k-8", paymentMethodId="not-a-pm")
    assert bad[0] == 400  # validation failures are not recorded...
    status, body, _ = await initiate(shop, user, order_id, "k-mpesa", "mpesa", phoneNumber="0712345678")
    assert status == 422 and "KES" in body["message"]  # this order is in USD
    good = await initiate(shop, user, order_id, "k-8", paymentMethodId="pm_card_visa")
    assert good[0] == 201  # ...so the corrected request may use the key
    mismatch = await initiate(shop, user, order_id, "k-8")
    assert mismatch[0] == 422 and mismatch[1]["error"]["code"] == "idempotency_key_mismatch"
    assert (await initiate(shop, user, order_id, "k-9", "mpesa", phoneNumber="12345"))[0] == 400
    assert (await initiate(shop, user, "0" * 24, "k-10", paymentMethodId="pm_card_visa"))[0] == 404
    assert (await initiate(shop, shop.token(), order_id, "k-11", paymentMethodId="pm_card_visa"))[0] == 404


async def test_200_concurrent_identical_requests_charge_once(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    results = await asyncio.gather(*(initiate(shop, user, order_id, "same-key", paymentMethodId="pm_card_visa")
                                     for _ in range(200)))
    outcomes = Counter((status, headers.get("Idempotent-Replayed")) for status, _, headers in results)
    assert outcomes[(201, None)] == 1
    assert set(outcomes) <= {(201, None), (201, "true"), (409, None)}
    bodies = {json.dumps(body, sort_keys=True) for status, body, _ in results if status == 201}
    assert len(bodies) == 1  # every replay is the first response
    assert len(charges()) == 1 and await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_200_concurrent_keys_for_one_order_pay_it_once(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    results = await asyncio.gather(*(initiate(shop, user, order_id, f"key-{i}", paymentMethodId="pm_card_visa")
                                     for i in range(200)))
    statuses = Counter(status for status, _, _ in results)
    assert statuses[201] == 1 and statuses[409] == 199
    assert len(charges()) == 1 and await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_refunds(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop, price=10, quantity=3)
    payment = (await initiate(shop, user, order_id, "k-12", paymentMethodId="pm_card_visa"))[1]["payment"]
    admin = shop.token("admin")
    path = f"/api/payments/{payment['_id']}/refund"
    assert (await shop.call("POST", path, {"amount": 5}, token=user, headers={"Idempotency-Key": "r"}))[0] == 403
    assert (await shop.call("POST", path, {"amount": 5}, token=admin))[0] == 400
    status, body, _ = await shop.call("POST", path, {"amount": 12.5}, token=admin, headers={"Idempotency-Key": "r1"})
    assert status == 200 and body["payment"]["status"] == "partially_refunded"
    assert body["payment"]["refundedAmount"] == 12.5
    again = await shop.call("POST", path, {"amount": 12.5}, token=admin, headers={"Idempotency-Key": "r1"})
    assert again[2]["Idempotent-Replayed"] == "true"
    too_much = await shop.call("POST", path, {"amount": 20}, token=admin, headers={"Idempotency-Key": "r2"})
    assert too_much[0] == 409
    status, body, _ = await shop.call("POST", path, {}, token=admin, headers={"Idempotency-Key": "r3"})
    assert status == 200 and body["payment"]["status"] == "refunded" and body["payment"]["refundedAmount"] == 30
    assert [e["amount"] for e in local_stripe().ledger if e["type"] == "refund"] == [1250, 1750]
    assert await order_state(shop, user, order_id) == ("confirmed", "refunded")


async def test_verify_asks_the_provider(full_shop) -> None:
    shop = full_shop
    user, order_id, _ = await setup_order(shop)
    body = (await initiate(shop, user, order_id, "k-13"))[1]
    stripe = local_stripe()
    stripe.endpoints.clear()  # the webhook never arrives; verify must find out by itself
    intent = stripe.intents[body["payment"]["transactionId"]]
    intent.update(status="succeeded", amount_received=intent["amount"])
    status, verified, _ = await shop.call("GET", f"/api/payments/verify/{body['payment']['_id']}", token=user)
    assert status == 200 and verified["payment"]["status"] == "succeeded"
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_health_shows_provider_modes(full_shop) -> None:
    payments_worker = full_shop.runtime.workers["rest-shop-payments"]
    reply = await asgi_fetch(payments_worker, Request("http://p/health"))
    body = await reply.json()
    assert reply.status == 200 and body["service"] == "rest-shop-payments"
    assert {name: {k: v for k, v in found.items() if k != "checkedAgoS"} for name, found in body["providers"].items()} \
        == {name: {"mode": "local", "reachable": True} for name in ("stripe", "paypal", "mpesa")}
    assert all(found["checkedAgoS"] < 5 for found in body["providers"].values())  # as last checked, and when
    assert body["database"]["status"] == "connected"


async def _idempotency_health(shop) -> dict[str, Any]:
    reply = await asgi_fetch(shop.runtime.workers["rest-shop-payments"], Request("http://p/health"))
    return (await reply.json())["idempotency"]


async def test_health_counts_idempotency_records_and_the_oldest_in_flight(full_shop) -> None:
    shop = full_shop
    before = await _idempotency_health(shop)
    user, order_id, _ = await setup_order(shop)
    assert (await initiate(shop, user, order_id, "k-health", paymentMethodId="pm_card_visa"))[0] == 201
    after = await _idempotency_health(shop)
    assert after["records"] == before["records"] + 1 and after["in_flight"] == before["in_flight"]
    await initiate(shop, user, order_id, "k-health", paymentMethodId="pm_card_visa")  # a replay holds no new record
    assert (await _idempotency_health(shop))["records"] == after["records"]
    ns = shop.runtime.workers["rest-shop-payments"].env.PAYMENT_IDEMPOTENCY
    stuck = ns.get(ns.id_from_name("health-test:stuck"))  # a request still running at the provider
    assert (await stuck.begin("fingerprint"))["outcome"] == "proceed"
    during = await _idempotency_health(shop)
    assert during["in_flight"] == before["in_flight"] + 1 and during["oldest_in_flight_s"] >= 0
    await stuck.release()
    done = await _idempotency_health(shop)
    assert (done["records"], done["in_flight"]) == (after["records"], after["in_flight"])


async def test_the_sweep_settles_what_no_webhook_or_client_reported(full_shop) -> None:
    """The customer confirmed in the browser, the webhook never came, the client never asked:
    the reconciliation sweep asks Stripe and pays the order; an untouched intent stays open."""
    from payments.reconcile import reconcile_open_payments
    shop = full_shop
    payments_env = shop.runtime.workers["rest-shop-payments"].env
    user, order_id, _ = await setup_order(shop)
    other_user, other_order, _ = await setup_order(shop)
    stripe = local_stripe()
    paid = (await initiate(shop, user, order_id, "sweep-1"))[1]
    untouched = (await initiate(shop, other_user, other_order, "sweep-2"))[1]
    stripe.endpoints.clear()  # webhooks are lost from here on
    assert await _confirm_in_browser(paid["payment"]["transactionId"], "pm_card_visa") == 200
    assert await order_state(shop, user, order_id) == ("pending", "pending")
    assert await reconcile_open_payments(payments_env, older_than_s=0) == 1
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")
    assert await payment_reaches(shop, user, paid["payment"]["_id"], "succeeded")
    assert await order_state(shop, other_user, other_order) == ("pending", "pending")
    status, still, _ = await shop.call("GET", f"/api/payments/{untouched['payment']['_id']}", token=other_user)
    assert still["payment"]["status"] == "requires_action"
    assert await reconcile_open_payments(payments_env, older_than_s=3600) == 0  # recently checked ones wait
