"""M-Pesa end to end through the gateway, against the local Daraja server: STK push, the
customer's answer as a callback (token-guarded, IP-allowlisted, deduplicated), STK query."""
from __future__ import annotations


import aiohttp
import pytest

from payments.providers import registry
from tests.polling import eventually
from tests.shop_flows import initiate, order_state, payment_reaches


def daraja():
    return registry.local_servers["mpesa"]


async def kes_order(shop, price=150, quantity=2):
    return await setup_order_kes(shop, price, quantity)


async def setup_order_kes(shop, price, quantity):
    from bson import ObjectId
    user = shop.token(user_id=str(ObjectId()))
    product = await shop.product(price=price, stock=100, currency="KES")
    status, body, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": quantity},
                                      token=user)
    assert status == 201
    return user, body["createdOrder"]["_id"]


async def _state_is(shop, user, order_id, expected) -> bool:
    return await order_state(shop, user, order_id) == expected


async def test_stk_push_then_callback_pays_the_order(full_shop) -> None:
    shop = full_shop
    user, order_id = await kes_order(shop)
    status, body, _ = await initiate(shop, user, order_id, "mp-1", "mpesa", phoneNumber="+254 712 345 678")
    assert status == 201 and body["payment"]["status"] == "pending" and body["payment"]["currency"] == "KES"
    assert body["paymentDetails"]["customerMessage"].startswith("Success")
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    ledger = daraja().ledger
    assert [(e["amount"], e["currency"], e["phone"]) for e in ledger] == [(30000, "KES", "254712345678")]
    replay = await initiate(shop, user, order_id, "mp-1", "mpesa", phoneNumber="+254 712 345 678")
    assert replay[2]["Idempotent-Replayed"] == "true" and daraja().pushes == 1  # never a second STK push


@pytest.mark.parametrize("phone, reason", [("0700000001", "cancelled"), ("0700000002", "insufficient")])
async def test_customer_declines_on_the_phone(full_shop, phone, reason) -> None:
    shop = full_shop
    user, order_id = await kes_order(shop)
    body = (await initiate(shop, user, order_id, "mp-2", "mpesa", phoneNumber=phone))[1]
    assert await eventually(lambda: _state_is(shop, user, order_id, ("pending", "failed")))
    payment = await payment_reaches(shop, user, body["payment"]["_id"], "failed")
    assert payment and reason in payment["failureReason"].lower()


def callback_path(shop, payment_id: str) -> str:
    """The path and query of a payment's genuine callback URL (what Daraja was given)."""
    url = registry.providers["mpesa"].callback_url(shop.url, payment_id)
    assert url.startswith(shop.url)
    return "/api" + url[len(shop.url):]


def success_callback(checkout: str, amount: float | None = 300.0, receipt: str | None = "RCP123XYZ",
                     phone: int | None = 254700000003) -> dict:
    items = [{"Name": name, "Value": value} for name, value in (("Amount", amount), ("MpesaReceiptNumber", receipt),
                                                                ("TransactionDate", 20261127120000),
                                                                ("PhoneNumber", phone)) if value is not None]
    return {"Body": {"stkCallback": {"MerchantRequestID": "1-2-3", "CheckoutRequestID": checkout, "ResultCode": 0,
                                     "ResultDesc": "The service request is processed successfully.",
                                     "CallbackMetadata": {"Item": items}}}}


async def silent_payment(shop, key: str) -> tuple[str, str, dict]:
    """A KES 300 order whose STK push reaches a phone that never answers: nothing settles it by itself."""
    user, order_id = await kes_order(shop)
    status, body, _ = await initiate(shop, user, order_id, key, "mpesa", phoneNumber="0700000003")
    assert status == 201 and body["payment"]["status"] == "pending"
    return user, order_id, body["payment"]


async def test_callbacks_need_their_payments_credential_and_are_applied_once(full_shop) -> None:
    shop = full_shop
    user, order_id = await kes_order(shop)
    await initiate(shop, user, order_id, "mp-3", "mpesa", phoneNumber="0712345678")
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    server = daraja()
    # the order is paid before its callback's delivery is complete: a duplicate sent in between is
    # told to retry (409, as designed); this test's duplicate comes after the first delivery ended
    await server.quiesce()
    assert list(server.deliveries.values()) == [200]
    checkout = next(iter(server.events))
    callback = server.events[checkout]
    url = server.requests[checkout]["push"]["CallBackURL"]
    assert url.startswith(shop.url + "/payments/mpesa/callback?payment=")  # PUBLIC_BASE_URL, not a Host
    assert registry.providers["mpesa"].callback_token not in url  # the secret itself never leaves
    genuine = "/api" + url[len(shop.url):]
    tampered = genuine[:-1] + ("0" if genuine[-1] != "0" else "1")
    for path in ("/api/payments/mpesa/callback", tampered,
                 "/api/payments/mpesa/callback?token=" + registry.providers["mpesa"].callback_token):
        status, body, _ = await shop.call("POST", path, json=callback)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/_local/events/{checkout}/deliver", json={}) as resp:
            assert (await resp.json())["delivered"] == 200  # duplicate: accepted, changes nothing
    status, body, _ = await shop.call("POST", genuine, data=b"not json")
    assert status == 400
    assert len(server.ledger) == 1 and await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_a_client_host_header_never_becomes_the_callback_url(full_shop) -> None:
    """The reproduction: initiate through the gateway with `Host: <attacker>`; the STK push must
    still name the configured PUBLIC_BASE_URL, so the callback (and its credential) never leaks."""
    shop = full_shop
    user, order_id = await kes_order(shop)
    status, body, _ = await initiate(shop, user, order_id, "mp-host", "mpesa", phoneNumber="0700000003",
                                     headers={"Host": "127.0.0.1:9", "X-Forwarded-Host": "attacker.example"})
    assert status == 201
    push = daraja().requests[body["payment"]["transactionId"]]["push"]
    assert push["CallBackURL"].startswith(shop.url + "/payments/mpesa/callback?")
    assert "attacker" not in push["CallBackURL"] and ":9/" not in push["CallBackURL"]


async def test_a_leaked_callback_url_settles_no_other_payment(full_shop) -> None:
    """Payment A's callback URL (its credential) aimed at payment B: refused, B's order stays unpaid."""
    shop = full_shop
    _, _, payment_a = await silent_payment(shop, "mp-leak-a")
    user_b, order_b, payment_b = await silent_payment(shop, "mp-leak-b")
    leaked = callback_path(shop, payment_a["_id"])
    forged = leaked.replace(payment_a["_id"], payment_b["_id"])
    status, body, _ = await shop.call("POST", forged, json=success_callback(payment_b["transactionId"]))
    assert status == 401
    # A's credential with B's CheckoutRequestID: refused too, A is not settled with B's request
    status, body, _ = await shop.call("POST", leaked, json=success_callback(payment_b["transactionId"]))
    assert status == 422 and body["error"]["code"] == "invalid_callback"
    for user, order_id, payment in ((user_b, order_b, payment_b),):
        assert await order_state(shop, user, order_id) == ("pending", "pending")
        status, current, _ = await shop.call("GET", f"/api/payments/{payment['_id']}", token=user)
        assert current["payment"]["status"] == "pending"
    assert daraja().ledger == []


@pytest.mark.parametrize("fields, why", [
    ({"amount": None}, "no Amount"), ({"receipt": None}, "no receipt"), ({"phone": None}, "no phone"),
    ({"amount": 1.0}, "a smaller amount"), ({"phone": 254711111111}, "another phone"),
])
async def test_a_success_callback_must_say_what_the_push_asked_for(full_shop, fields, why) -> None:
    """Even with the genuine URL, a success without Amount, MpesaReceiptNumber and the phone, or
    with other values than our push, is refused: the order stays unpaid, the payment untouched."""
    shop = full_shop
    user, order_id, payment = await silent_payment(shop, f"mp-bad-{why}")
    status, body, _ = await shop.call("POST", callback_path(shop, payment["_id"]),
                                      json=success_callback(payment["transactionId"], **fields))
    assert status == 422 and body["error"]["code"] == "invalid_callback", why
    assert await order_state(shop, user, order_id) == ("pending", "pending")
    status, current, _ = await shop.call("GET", f"/api/payments/{payment['_id']}", token=user)
    assert current["payment"]["status"] == "pending" and current["payment"]["failureReason"] is None


async def test_a_refused_callback_asks_the_stk_query_instead(full_shop) -> None:
    """A malformed success callback is not believed, but Daraja's own query is: when the customer
    did pay, the query settles the payment."""
    shop = full_shop
    user, order_id, payment = await silent_payment(shop, "mp-query")
    daraja().requests[payment["transactionId"]]["result"] = (0, "The service request is processed successfully.")
    status, body, _ = await shop.call("POST", callback_path(shop, payment["_id"]),
                                      json=success_callback(payment["transactionId"], amount=None))
    assert status == 422
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_the_genuine_callback_with_the_right_details_pays(full_shop) -> None:
    shop = full_shop
    user, order_id, payment = await silent_payment(shop, "mp-good")
    status, body, _ = await shop.call("POST", callback_path(shop, payment["_id"]),
                                      json=success_callback(payment["transactionId"]))
    assert status == 200 and body == {"ResultCode": 0, "ResultDesc": "Accepted"}
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_verify_asks_daraja_when_no_callback_came(full_shop) -> None:
    shop = full_shop
    user, order_id = await kes_order(shop)
    body = (await initiate(shop, user, order_id, "mp-4", "mpesa", phoneNumber="0700000003"))[1]
    status, verified, _ = await shop.call("GET", f"/api/payments/verify/{body['payment']['_id']}", token=user)
    assert status == 200 and verified["payment"]["status"] == "pending"  # still on the customer's phone
    daraja().requests[body["payment"]["transactionId"]]["result"] = (0, "processed")
    status, verified, _ = await shop.call("GET", f"/api/payments/verify/{body['payment']['_id']}", token=user)
    assert verified["payment"]["status"] == "succeeded"
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_mpesa_rules(full_shop) -> None:
    shop = full_shop
    user, order_id = await kes_order(shop, price=10.5, quantity=1)
    status, body, _ = await initiate(shop, user, order_id, "mp-5", "mpesa", phoneNumber="0712345678")
    assert status == 422 and "whole shillings" in body["message"]
    for phone in ("12345", "0812345678", "+1 555 0100", "25471234567"):
        assert (await initiate(shop, user, order_id, f"mp-{phone}", "mpesa", phoneNumber=phone))[0] == 400
    assert daraja().pushes == 0


async def test_refunds_are_not_offered_for_m_pesa(full_shop) -> None:
    """Daraja reversals are done in the org portal: the API says so instead of pretending to retry."""
    shop = full_shop
    user, order_id = await kes_order(shop)
    body = (await initiate(shop, user, order_id, "mp-9", "mpesa", phoneNumber="0712345678"))[1]
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    assert await payment_reaches(shop, user, body["payment"]["_id"], "succeeded")
    status, reply, _ = await shop.call("POST", f"/api/payments/{body['payment']['_id']}/refund", {},
                                       token=shop.token("admin"), headers={"Idempotency-Key": "r-1"})
    assert status == 501 and reply["error"]["code"] == "refund_not_supported"
    assert await order_state(shop, user, order_id) == ("confirmed", "paid")


async def test_a_push_whose_reply_timed_out_is_still_settled_and_never_pushed_twice(full_shop) -> None:
    """Daraja answers after our timeout: the push did reach the phone. Its callback finds the
    record through the payment id in the callback URL; the client's retry replays, no second push."""
    shop = full_shop
    user, order_id = await kes_order(shop)
    server = daraja()
    async with aiohttp.ClientSession() as http:
        await (await http.post(f"{server.url}/_local/faults", json={"delay_s": 1.6, "count": 1,
                                                                          "path": "/mpesa/stkpush/"})).release()
    status, body, _ = await initiate(shop, user, order_id, "mp-10", "mpesa", phoneNumber="0712345678")
    assert status == 503 and body["error"]["code"] == "provider_unavailable"
    assert await eventually(lambda: _state_is(shop, user, order_id, ("confirmed", "paid")))
    status, body, _ = await initiate(shop, user, order_id, "mp-10", "mpesa", phoneNumber="0712345678")
    assert status == 201, body
    assert body["payment"]["status"] == "succeeded" and body["payment"]["transactionId"]
    assert server.pushes == 1 and len(server.ledger) == 1
