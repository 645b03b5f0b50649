"""/orders through OrderLock on the real base worker: reservation, lifecycle, concurrency, expiry."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from durable import Request
from durable.asgi import asgi_fetch
from base.stores.orders import OrderStore
from models.errors_domain import Conflict, OrderVoided
from tests.conftest import FX_PAYER_TOML


async def stock_of(shop, product_id: str) -> tuple[int, list[dict]]:
    """The product's stock and holds from their authority (its ProductStock object); the
    document's read model must already agree (it is written before the caller is answered)."""
    ns = shop.worker.env.PRODUCT_STOCK
    snapshot = await ns.get(ns.id_from_name(product_id)).snapshot(product_id)
    assert shop.db()["products"].find_one({"_id": ObjectId(product_id)})["stock"] == snapshot["stock"]
    return snapshot["stock"], snapshot["holds"]


async def order(shop, token, **body):
    return await shop.call("POST", "/orders", body, token=token)


async def test_create_order_reserves_stock_and_computes_total_exactly(shop) -> None:
    product = await shop.product(name="Tea", price=19.99, stock=5)
    user = shop.token()
    status, body, _ = await order(shop, user, productId=product["_id"], quantity=3,
                                  shippingAddress={"line1": "1 Main St", "city": "Nairobi", "country": "KE"})
    assert status == 201 and body["message"] == "Order saved"
    created = body["createdOrder"]
    assert created["totalAmount"] == 59.97 and created["currency"] == "USD" and created["quantity"] == 3
    assert created["status"] == "pending" and created["paymentStatus"] == "pending"
    assert created["product"] == product["_id"] and created["items"][0]["unitPrice"] == 19.99
    assert await stock_of(shop, product["_id"]) == (2, [{"o": created["_id"], "q": 3}])
    assert shop.db()["orders"].find_one({"_id": ObjectId(created["_id"])})["total_minor"] == 5997


async def test_insufficient_stock_is_409_with_details_and_changes_nothing(shop) -> None:
    product = await shop.product(stock=2)
    status, body, _ = await order(shop, shop.token(), productId=product["_id"], quantity=3)
    assert status == 409 and body["error"]["code"] == "insufficient_stock"
    assert body["error"]["details"] == [{"productId": product["_id"], "available": 2, "requested": 3}]
    assert await stock_of(shop, product["_id"]) == (2, []) and shop.db()["orders"].count_documents({}) == 0


async def test_unknown_or_inactive_product_is_404(shop) -> None:
    status, body, _ = await order(shop, shop.token(), productId="0" * 24)
    assert status == 404 and body["error"]["code"] == "not_found"
    product = await shop.product(isActive=False)
    assert (await order(shop, shop.token(), productId=product["_id"]))[0] == 404


@pytest.mark.parametrize("body", [
    {"productId": "a" * 24, "quantity": 0}, {"productId": "a" * 24, "quantity": 101}, {"productId": "nope"},
    {}, {"productId": "a" * 24, "items": [{"productId": "b" * 24}]},
    {"productId": "a" * 24, "quantity": True}, {"productId": None}, {"items": []},
    {"productId": "a" * 24, "currency": "dollars"}, {"productId": {"$gt": ""}},
])
async def test_order_validation(shop, body) -> None:
    status, reply, _ = await order(shop, shop.token(), **body)
    assert status == 400 and reply["error"]["code"] == "validation_error"


async def test_orders_need_a_token(shop) -> None:
    assert (await shop.call("POST", "/orders", {"productId": "a" * 24}))[0] == 401


async def test_multi_item_orders_are_all_or_nothing(shop) -> None:
    a, b = await shop.product(name="A", price=1, stock=5), await shop.product(name="B", price=2.5, stock=1)
    user = shop.token()
    status, body, _ = await order(shop, user, items=[{"productId": a["_id"], "quantity": 2},
                                                     {"productId": b["_id"], "quantity": 2}])
    assert status == 409 and body["error"]["details"][0]["productId"] == b["_id"]
    assert await stock_of(shop, a["_id"]) == (5, []) and await stock_of(shop, b["_id"]) == (1, [])
    status, body, _ = await order(shop, user, items=[{"productId": a["_id"], "quantity": 2},
                                                     {"productId": b["_id"], "quantity": 1}])
    assert status == 201 and body["createdOrder"]["totalAmount"] == 4.5 and body["createdOrder"]["quantity"] == 3


async def test_the_same_product_twice_in_items_is_one_line(shop) -> None:
    product = await shop.product(price=2, stock=5)
    status, body, _ = await order(shop, shop.token(), items=[{"productId": product["_id"], "quantity": 1},
                                                             {"productId": product["_id"], "quantity": 2}])
    assert status == 201
    assert [(i["productId"], i["quantity"]) for i in body["createdOrder"]["items"]] == [(product["_id"], 3)]
    assert await stock_of(shop, product["_id"]) == (2, [{"o": body["createdOrder"]["_id"], "q": 3}])


async def test_currency_must_match(shop) -> None:
    usd, eur = await shop.product(price=1), await shop.product(price=1, currency="EUR")
    status, body, _ = await order(shop, shop.token(), productId=eur["_id"], currency="USD")
    assert status == 409 and body["error"]["code"] == "conflict" and "priced in EUR" in body["message"]
    status, body, _ = await order(shop, shop.token(), items=[{"productId": usd["_id"]}, {"productId": eur["_id"]}])
    assert status == 409
    assert await stock_of(shop, usd["_id"]) == (10, []) and await stock_of(shop, eur["_id"]) == (10, [])


async def test_visibility_and_listing(shop) -> None:
    product = await shop.product(stock=50)
    ann, bob = str(ObjectId()), str(ObjectId())
    ann_orders = [(await order(shop, shop.token(user_id=ann), productId=product["_id"]))[1]["createdOrder"]
                  for _ in range(3)]
    bob_order = (await order(shop, shop.token(user_id=bob), productId=product["_id"]))[1]["createdOrder"]
    status, body, _ = await shop.call("GET", f"/orders/{bob_order['_id']}", token=shop.token(user_id=ann))
    assert status == 404  # not 403: other users' ids are not confirmed
    assert (await shop.call("GET", f"/orders/{bob_order['_id']}", token=shop.token("admin")))[0] == 200
    status, body, _ = await shop.call("GET", "/orders?limit=2", token=shop.token(user_id=ann))
    assert body["total"] == 3 and body["count"] == 2 and body["pagination"] == {"page": 1, "limit": 2, "pages": 2}
    assert [o["_id"] for o in body["orders"]] == [o["_id"] for o in reversed(ann_orders)][:2]
    assert (await shop.call("GET", "/orders", token=shop.token("admin")))[1]["total"] == 4
    assert (await shop.call("GET", "/orders?status=cancelled", token=shop.token("admin")))[1]["total"] == 0
    assert (await shop.call("GET", "/orders/bad-id", token=shop.token("admin")))[0] == 400
    assert (await shop.call("GET", "/orders?status=lost", token=shop.token("admin")))[0] == 400


async def test_lifecycle_through_payment_to_delivery(shops) -> None:
    shop = await shops(extra=[FX_PAYER_TOML])
    product = await shop.product(price=12.5, stock=4)
    created = (await order(shop, shop.token(), productId=product["_id"], quantity=2))[1]["createdOrder"]
    payer = shop.runtime.workers["fx-payer"]
    admin = shop.token("admin")

    async def pay(**body):
        response = await asgi_fetch(payer, Request(f"http://x/pay/{created['_id']}", method="POST", json=body))
        return response.status, await response.json()

    assert (await shop.call("PATCH", f"/orders/{created['_id']}/status", {"status": "shipped"}, token=admin))[0] == 409
    status, failed = await pay(paymentId="p0", fail=True)
    assert status == 200 and failed["status"] == "pending" and failed["paymentStatus"] == "failed"
    status, mismatch = await pay(paymentId="p1", amount_minor=2400, currency="USD")
    assert status == 409 and mismatch["error"] == "Unprocessable"
    status, paid = await pay(paymentId="p1", amount_minor=2500, currency="USD")
    assert status == 200 and paid["status"] == "confirmed" and paid["paymentStatus"] == "paid"
    assert (await pay(paymentId="p1", amount_minor=2500, currency="USD"))[1] == paid  # idempotent per payment id
    status, again = await pay(paymentId="p2", amount_minor=2500, currency="USD")
    assert status == 409 and again["error"] == "Conflict"

    user_try = await shop.call("PATCH", f"/orders/{created['_id']}/status", {"status": "processing"},
                               token=shop.token())
    assert user_try[0] == 403
    for next_status in ("processing", "shipped", "delivered"):
        status, body, _ = await shop.call("PATCH", f"/orders/{created['_id']}/status", {"status": next_status},
                                          token=admin)
        assert status == 200 and body["status"] == next_status
    assert await stock_of(shop, product["_id"]) == (2, [])  # sold for good: the hold is gone, stock stays down
    status, body, _ = await shop.call("PATCH", f"/orders/{created['_id']}/status", {"status": "cancelled"},
                                      token=admin)
    assert status == 409
    stored = shop.db()["orders"].find_one({"_id": ObjectId(created["_id"])})
    assert stored["status"] == "delivered" and stored["paymentId"] == "p1"


async def test_cancel_releases_stock_exactly_once_and_delete(shop) -> None:
    product = await shop.product(stock=3)
    created = (await order(shop, shop.token(), productId=product["_id"], quantity=3))[1]["createdOrder"]
    admin = shop.token("admin")
    for _ in range(2):
        status, body, _ = await shop.call("PATCH", f"/orders/{created['_id']}/status", {"status": "cancelled"},
                                          token=admin)
        assert status == 200 and body["status"] == "cancelled"
    assert await stock_of(shop, product["_id"]) == (3, [])
    second = (await order(shop, shop.token(), productId=product["_id"], quantity=2))[1]["createdOrder"]
    assert (await shop.call("DELETE", f"/orders/{second['_id']}", token=shop.token()))[0] == 403
    assert (await shop.call("DELETE", f"/orders/{second['_id']}", token=admin))[0] == 200
    assert await stock_of(shop, product["_id"]) == (3, [])
    assert (await shop.call("GET", f"/orders/{second['_id']}", token=admin))[0] == 404


async def test_idempotency_key_makes_retries_safe(shop) -> None:
    product = await shop.product(stock=10)
    user = shop.token(user_id=str(ObjectId()))
    headers = {"Idempotency-Key": "checkout-42"}
    first = await shop.call("POST", "/orders", {"productId": product["_id"], "quantity": 2}, token=user, headers=headers)
    retry = await shop.call("POST", "/orders", {"productId": product["_id"], "quantity": 2}, token=user, headers=headers)
    assert first[0] == retry[0] == 201
    assert first[1]["createdOrder"]["_id"] == retry[1]["createdOrder"]["_id"]
    assert (await stock_of(shop, product["_id"]))[0] == 8
    changed = await shop.call("POST", "/orders", {"productId": product["_id"], "quantity": 3}, token=user,
                              headers=headers)
    assert changed[0] == 409 and (await stock_of(shop, product["_id"]))[0] == 8


async def test_unpaid_orders_expire_and_release_stock(shops) -> None:
    shop = await shops(ORDER_PAYMENT_TIMEOUT_S=0.3)
    product = await shop.product(stock=2)
    created = (await order(shop, shop.token(), productId=product["_id"], quantity=2))[1]["createdOrder"]
    assert (await stock_of(shop, product["_id"]))[0] == 0
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline:
        status = shop.db()["orders"].find_one({"_id": ObjectId(created["_id"])})["status"]
        if status == "cancelled":
            break
        await asyncio.sleep(0.05)
    assert status == "cancelled" and await stock_of(shop, product["_id"]) == (2, [])


async def test_500_concurrent_orders_for_50_in_stock(shop) -> None:
    product = await shop.product(stock=50)
    tokens = [shop.token() for _ in range(20)]
    results = await asyncio.gather(*(order(shop, tokens[i % 20], productId=product["_id"]) for i in range(500)))
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {201: 50, 409: 450}
    stock, holds = await stock_of(shop, product["_id"])
    assert stock == 0 and len(holds) == 50 and sum(h["q"] for h in holds) == 50
    assert shop.db()["orders"].count_documents({}) == 50


async def test_concurrent_multi_item_orders_never_leave_partial_reservations(shop) -> None:
    a, b = await shop.product(name="A", stock=30), await shop.product(name="B", stock=20)
    shapes = [[(a, 2), (b, 1)], [(b, 3), (a, 1)], [(a, 1)], [(b, 2)]]
    bodies = [{"items": [{"productId": p["_id"], "quantity": q} for p, q in shapes[i % 4]]} for i in range(120)]
    results = await asyncio.gather(*(shop.call("POST", "/orders", body, token=shop.token()) for body in bodies))
    assert {status for status, _, _ in results} <= {201, 409}
    created = [body["createdOrder"] for status, body, _ in results if status == 201]
    for product, initial in ((a, 30), (b, 20)):
        stock, holds = await stock_of(shop, product["_id"])
        ordered = sum(i["quantity"] for o in created for i in o["items"] if i["productId"] == product["_id"])
        assert stock >= 0 and stock + ordered == initial
        assert sorted(h["o"] for h in holds) == sorted(o["_id"] for o in created
                                                        if any(i["productId"] == product["_id"] for i in o["items"]))


async def test_one_shopper_cannot_hoard_the_stock_with_unpaid_orders(shops) -> None:
    """The reproduction: three unpaid orders of 100 units held all 300 for 30 minutes."""
    shop = await shops(MAX_UNPAID_ORDERS="2", MAX_UNPAID_UNITS="150")
    product = await shop.product(stock=300)
    hoarder, other = shop.token(), shop.token()
    first = await order(shop, hoarder, productId=product["_id"], quantity=100)
    assert first[0] == 201
    status, body, _ = await order(shop, hoarder, productId=product["_id"], quantity=100)
    assert status == 409 and body["error"]["code"] == "unpaid_limit"
    assert body["error"]["details"][0] == {"unpaidOrders": 1, "unpaidUnits": 100, "maxUnpaidOrders": 2,
                                           "maxUnpaidUnits": 150, "requestedUnits": 100}
    assert "at most 2 orders and 150 units" in body["message"]
    assert (await order(shop, hoarder, productId=product["_id"], quantity=50))[0] == 201  # within both caps
    status, body, _ = await order(shop, hoarder, productId=product["_id"], quantity=1)
    assert status == 409 and body["error"]["details"][0]["unpaidOrders"] == 2  # now the order cap
    assert (await stock_of(shop, product["_id"]))[0] == 150  # nothing reserved by the refused ones
    assert (await order(shop, other, productId=product["_id"], quantity=100))[0] == 201  # others still buy

    # cancelling one gives its place back; a refused order (no stock) takes none
    status, cancelled, _ = await shop.call("POST", f"/orders/{first[1]['createdOrder']['_id']}/cancel", token=hoarder)
    assert status == 200 and cancelled["status"] == "cancelled"
    scarce = await shop.product(stock=1)
    status, body, _ = await order(shop, hoarder, productId=scarce["_id"], quantity=2)
    assert status == 409 and body["error"]["code"] == "insufficient_stock"  # refused: it keeps no place
    assert (await order(shop, hoarder, productId=product["_id"], quantity=100))[0] == 201


async def test_concurrent_orders_cannot_pass_the_unpaid_cap_together(shops) -> None:
    shop = await shops(MAX_UNPAID_ORDERS="3", MAX_UNPAID_UNITS="1000")
    product = await shop.product(stock=1000)
    user = shop.token()
    statuses = Counter(s for s, _, _ in await asyncio.gather(
        *(order(shop, user, productId=product["_id"], quantity=1) for _ in range(40))))
    assert statuses == {201: 3, 409: 37}
    assert (await stock_of(shop, product["_id"]))[0] == 997


async def test_paying_an_order_frees_its_unpaid_place(shops) -> None:
    shop = await shops([FX_PAYER_TOML], MAX_UNPAID_ORDERS="1")
    product = await shop.product(price=5, stock=10)
    user = shop.token()
    created = (await order(shop, user, productId=product["_id"], quantity=1))[1]["createdOrder"]
    assert (await order(shop, user, productId=product["_id"], quantity=1))[0] == 409
    lock = shop.worker.env.ORDER_LOCK
    await lock.get(lock.id_from_name(created["_id"])).mark_paid("pay-1", 500, "USD")
    assert (await order(shop, user, productId=product["_id"], quantity=1))[0] == 201


async def test_stock_kept_in_one_value_by_older_versions_moves_to_keys_unchanged(shop) -> None:
    """A dev state written before stock went to one key per hold keeps every figure."""
    from durable import codec
    product = await shop.product(name="Old", price=3, stock=10)
    ns = shop.worker.env.PRODUCT_STOCK
    object_id = ns.id_from_name(product["_id"])
    engine = shop.worker.hosts["ProductStock"].engine
    legacy = {"productId": product["_id"], "stock": 4, "holds": {"a" * 24: 5, "b" * 24: 1}, "restocked": ["c" * 24]}
    engine.stage(str(object_id)).writes["state"] = codec.encode(legacy)
    await engine.flush()
    snapshot = await ns.get(object_id).snapshot(product["_id"])
    assert snapshot == {"stock": 4, "holds": [{"o": "a" * 24, "q": 5}, {"o": "b" * 24, "q": 1}],
                        "restocked": ["c" * 24]}
    assert await ns.get(object_id).release(product["_id"], "a" * 24) is True
    assert await stock_of(shop, product["_id"]) == (9, [{"o": "b" * 24, "q": 1}])
    assert await ns.get(object_id).restock(product["_id"], "c" * 24, 2) is False  # still remembered


async def test_an_order_record_older_versions_wrote_still_reads_and_moves(shop) -> None:
    """A record without `attempt` or `pending` (older versions) and with a payment in progress
    loads as the typed record: the payment still holds others off, and a cancel gives the stock back."""
    from durable import codec
    product = await shop.product(price=4, stock=10)
    user = shop.token()
    created = (await order(shop, user, productId=product["_id"], quantity=2))[1]["createdOrder"]
    ns = shop.worker.env.ORDER_LOCK
    key = str(ns.id_from_name(created["_id"]))
    host = shop.worker.hosts["OrderLock"]
    assert host.evict_idle(0) >= 1  # the next call reads the record from storage
    legacy = codec.decode(host.engine.read(key, "state"))
    del legacy["attempt"], legacy["pending"]
    legacy["payment_lease"] = {"payment": "pay-old", "until": time.time() + 60}
    host.engine.stage(key).writes["state"] = codec.encode(legacy)
    await host.engine.flush()
    lock = ns.get_by_name(created["_id"])
    assert (await lock.get())["status"] == "pending"
    with pytest.raises(Conflict, match="another payment"):
        await lock.begin_payment("pay-new", created["userId"])
    assert (await lock.cancel())["status"] == "cancelled"
    assert (await stock_of(shop, product["_id"]))[0] == 10


async def test_a_reservation_that_arrives_after_its_order_was_undone_is_refused(shop) -> None:
    """An order's caller gave up on a reservation cut mid-call and released it (nothing was held
    yet); the reservation, held back by the network, arrives afterwards. It must be refused, or
    stock would stay held for an order that will never exist. The order's next attempt (a retry
    with the same id) may still reserve."""
    product = await shop.product(name="Late", price=3, stock=10)
    ns = shop.worker.env.PRODUCT_STOCK
    stock = ns.get(ns.id_from_name(product["_id"]))
    order_id = str(ObjectId())
    assert await stock.release(product["_id"], order_id, 0) is False  # nothing held: a tombstone only
    with pytest.raises(Conflict):
        await stock.reserve(product["_id"], order_id, 2, 0)
    assert await stock_of(shop, product["_id"]) == (10, [])
    assert (await stock.reserve(product["_id"], order_id, 2, 1))["ok"]  # the next attempt
    assert await stock_of(shop, product["_id"]) == (8, [{"o": order_id, "q": 2}])


async def test_a_shopper_s_claims_lapse_on_their_own_and_count_exactly(shop) -> None:
    """ShopperHolds keeps its claims in memory after the first read: a lapsed claim frees its place,
    a released one too, and a fresh instance (after eviction) reads the same from storage."""
    import time as clock

    holds = shop.worker.env.SHOPPER_HOLDS.get_by_name("shopper-1")
    now_ms = int(clock.time() * 1000)
    assert (await holds.claim("o1", 3, now_ms - 1, 2, 10))["ok"]  # already past its time
    assert await holds.claim("o2", 3, now_ms + 60_000, 2, 10) == {"ok": True, "orders": 1, "units": 3}
    assert await holds.claim("o3", 3, now_ms + 60_000, 2, 10) == {"ok": True, "orders": 2, "units": 6}
    assert await holds.claim("o4", 1, now_ms + 60_000, 2, 10) == {"ok": False, "orders": 2, "units": 6}
    assert await holds.claim("o2", 3, now_ms + 60_000, 2, 10) == {"ok": True, "orders": 2, "units": 6}  # a retry
    await holds.release("o2")
    shop.worker.hosts["ShopperHolds"].evict_idle(0)  # the next call reads storage afresh
    assert await holds.claim("o4", 5, now_ms + 60_000, 2, 10) == {"ok": True, "orders": 2, "units": 8}
    assert await holds.claim("o5", 1, now_ms + 60_000, 3, 10) == {"ok": True, "orders": 3, "units": 9}


async def test_an_order_write_that_arrives_after_its_creation_was_undone_never_lands(mongo_uri: str) -> None:
    """A node cut off mid-creation may still have the order's write on its way when the order's
    recovery (on another node) undoes it and releases the stock: that write must fail, or the
    shop would hold an order whose stock was given back. A retry of the order (next attempt)
    still goes through, and a write that landed first makes recovery complete, not undo."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        store = OrderStore(client[f"t_{ObjectId()}"])
        await store.ensure_indexes()
        late, landed = ObjectId(), ObjectId()
        assert await store.void(late, attempt=0) is None  # recovery undid attempt 0 ...
        with pytest.raises(OrderVoided):
            await store.insert({"_id": late, "items": [], "version": 1}, attempt=0)  # ... its write is refused
        assert await store.get(str(late)) is None and (await store.list({}, 1, 10))[1] == 0
        await store.insert({"_id": late, "items": [], "version": 1}, attempt=1)  # the client's retry
        await store.insert({"_id": late, "items": [], "version": 1}, attempt=1)  # (idempotent)
        assert (await store.get(str(late)))["attempt"] == 1
        await store.insert({"_id": landed, "items": [], "version": 1}, attempt=0)
        assert (await store.void(landed, attempt=0))["_id"] == landed  # it landed: complete it instead
    finally:
        await client.close()
