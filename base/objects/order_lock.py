"""OrderLock: one Durable Object per order, the single writer of its lifecycle.

Every change is recorded in the object's storage (and made durable) *before* the external
steps it needs — stock holds in each product's ProductStock object, the read model in `orders` —
and each step is idempotent. An alarm is armed while anything is unfinished, so if the process dies mid-way the
alarm (which fires after a restart) completes or compensates the work. The same alarm expires
unpaid orders.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from pymongo.errors import ConnectionFailure

from durable import (
    DurableObject,
    Request,
    Response,
    WebSocketPair,
    WebSocketRequestResponsePair,
    is_upgrade,
)
from durable.mongo_pool import pooled_database as database
from models.errors import error_body
from models.errors_domain import (
    Conflict,
    DatabaseUnavailable,
    InsufficientStock,
    NotFound,
    UnpaidLimit,
    Unprocessable,
)
from models.money import pays
from models.orders import TRANSITIONS
from models.stamps import now

from ..stores.orders import OrderStore, order_out
from .order_record import OrderRecord, PaymentInProgress, Phase, Step

log = logging.getLogger("rest_shop.order_lock")

STATE = "state"
LIVE = "live"  # the tag of the owner's sockets that follow this order (GET /orders/:id/live)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class OrderLock(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.payment_timeout = timedelta(seconds=float(env.get("ORDER_PAYMENT_TIMEOUT_S", 1800)))
        self.recovery_delay_ms = int(float(env.get("ORDER_RECOVERY_S", 30)) * 1000)
        self.pause_at = str(env.get("ORDER_TEST_PAUSE", "") or "")

    # -- plumbing -------------------------------------------------------------------------
    async def _orders(self) -> OrderStore:
        return OrderStore(await database(self.env))

    def _stock(self, product_id: str) -> Any:
        """The product's ProductStock object: the authority on its stock and holds."""
        return self.env.PRODUCT_STOCK.get_by_name(product_id)

    async def _load(self) -> OrderRecord | None:
        return OrderRecord.load(await self.ctx.storage.get(STATE))

    async def _store(self, record: OrderRecord) -> None:
        await self.ctx.storage.put(STATE, record.dump())

    async def _checkpoint(self, record: OrderRecord) -> None:
        """Record progress durably and keep a recovery alarm armed while work is unfinished."""
        await self._store(record)
        await self.ctx.storage.set_alarm(int(time.time() * 1000) + self.recovery_delay_ms)
        await self.ctx.storage.sync()

    async def _pause(self, point: str) -> None:
        """Test hook (var ORDER_TEST_PAUSE): stop here until the process is killed."""
        if self.pause_at == point:
            print(f"ORDER_TEST_PAUSE reached: {point}", flush=True)
            await asyncio.Event().wait()

    async def _serial(self, fn: Any) -> Any:
        """One operation at a time per order, even across Mongo awaits. A database outage is
        DatabaseUnavailable to the caller; the checkpoint left behind is finished or undone later."""
        try:
            return await self.ctx.block_concurrency_while(fn)
        except ConnectionFailure as exc:
            raise DatabaseUnavailable(type(exc).__name__) from None

    # -- creation -------------------------------------------------------------------------
    async def create(self, spec: dict[str, Any], capped: bool = True) -> dict[str, Any]:
        """Take the shopper's unpaid place (unless not `capped`: an admin), reserve every line's
        stock (all or nothing) and write the order; idempotent per order id."""
        return await self._serial(lambda: self._create(spec, capped))

    async def _create(self, spec: dict[str, Any], capped: bool) -> dict[str, Any]:
        record = await self._recovered()
        if record is not None and record.phase is Phase.CREATED:
            if record.spec == spec:
                return order_out(record.created)  # a retry of the same request
            raise Conflict("this order id (Idempotency-Key) was already used for a different order")
        # no record, or an earlier attempt that was rejected or undone: (re)try from scratch
        attempt = 0 if record is None else record.attempt + 1
        if capped:
            await self._claim_place(spec)
        await self._checkpoint(OrderRecord(Phase.RESERVING, spec, attempt))
        await self._pause("after-intent")
        orders = await self._orders()
        try:
            lines, currency = await self._reserve(spec, attempt)
        except Exception:
            await self._compensate(spec, attempt, Phase.REJECTED)
            raise
        stamp = now()
        order = {"_id": ObjectId(spec["orderId"]), "userId": spec["userId"], "items": lines,
                 "total_minor": sum(line["unit_minor"] * line["quantity"] for line in lines), "currency": currency,
                 "status": "pending", "paymentStatus": "pending", "paymentId": None, "payments": [],
                 "shippingAddress": spec.get("shippingAddress"), "expiresAt": stamp + self.payment_timeout,
                 "createdAt": stamp, "updatedAt": stamp, "version": 1}
        await orders.insert(order, attempt)
        await self._pause("after-insert")
        await self._settle(OrderRecord(Phase.CREATED, spec, attempt, order))
        return order_out(order)

    async def _claim_place(self, spec: dict[str, Any]) -> None:
        """Shoppers hold at most MAX_UNPAID_ORDERS unpaid orders and MAX_UNPAID_UNITS units. The
        place lapses by itself a while after the payment deadline (a crash cannot keep it long);
        paying, cancelling or a refusal give it back at once (Step.UNCLAIM, `_compensate`)."""
        units = sum(item["quantity"] for item in spec["items"])
        max_orders, max_units = int(self.env.get("MAX_UNPAID_ORDERS", 5)), int(self.env.get("MAX_UNPAID_UNITS", 50))
        until_ms = int(time.time() * 1000 + self.payment_timeout.total_seconds() * 1000 + 2 * self.recovery_delay_ms)
        claim = await self._holds(spec["userId"]).claim(spec["orderId"], units, until_ms, max_orders, max_units)
        if not claim["ok"]:
            raise UnpaidLimit.of(claim["orders"], claim["units"], max_orders, max_units, units)

    def _holds(self, user_id: str) -> Any:
        """The shopper's ShopperHolds object: the unpaid orders they hold stock with."""
        return self.env.SHOPPER_HOLDS.get_by_name(user_id)

    async def _reserve(self, spec: dict[str, Any], attempt: int) -> tuple[list[dict[str, Any]], str]:
        """Hold each line's stock with its product; the order's lines and currency, or why not."""
        lines: list[dict[str, Any]] = []
        for item in spec["items"]:
            held = await self._stock(item["productId"]).reserve(item["productId"], spec["orderId"], item["quantity"],
                                                                attempt)
            if not held["ok"]:
                if not held["found"] or not held["isActive"]:
                    raise NotFound(f"Product {item['productId']} not found")
                raise InsufficientStock.of(item["productId"], held["available"], item["quantity"])
            lines.append({"productId": item["productId"], "name": held["name"], "unit_minor": held["price_minor"],
                          "quantity": item["quantity"], "currency": held["currency"]})
            await self._pause("after-reserve")
        currencies = {line.pop("currency") for line in lines}
        if len(currencies) > 1:
            raise Conflict("all products of one order must share a currency")
        currency = currencies.pop()
        if spec.get("currency") and spec["currency"] != currency:
            raise Conflict(f"these products are priced in {currency}, not {spec['currency']}")
        return lines, currency

    async def _compensate(self, spec: dict[str, Any], attempt: int, phase: Phase) -> None:
        """Give back what this attempt held (its stock, the shopper's unpaid place)."""
        for item in spec["items"]:
            await self._stock(item["productId"]).release(item["productId"], spec["orderId"], attempt)
        await self._holds(spec["userId"]).release(spec["orderId"])
        await self._store(OrderRecord(phase, spec, attempt))
        await self.ctx.storage.delete_alarm()

    async def _settle(self, record: OrderRecord) -> None:
        """Store the settled record and arm the alarm it needs (expiry while pending); then tell
        whoever follows the order, once the record is durable."""
        await self._store(record)
        order = record.created
        if order["status"] == "pending":
            await self.ctx.storage.set_alarm(order["expiresAt"])
        else:
            await self.ctx.storage.delete_alarm()
        sockets = self.ctx.get_websockets(LIVE)
        if sockets:
            await self.ctx.storage.sync()
            for ws in sockets:
                self._tell(ws, order)

    # -- following an order live ----------------------------------------------------------
    @staticmethod
    def _tell(ws: Any, order: dict[str, Any]) -> None:
        """One update: the order as the API shows it; a final order's socket is then closed."""
        try:
            ws.send(json.dumps({"type": "order", "version": order["version"], "order": order_out(order)}))
            if not TRANSITIONS[order["status"]]:
                ws.close(1000, f"the order is {order['status']}")
        except RuntimeError:  # closed meanwhile: its close event is on its way
            pass

    async def fetch(self, request: Request) -> Response:
        """The far end of `GET /orders/:id/live`: the owner's (or an admin's) socket gets the order
        now and after every change. Sockets are held by the runtime while the object hibernates."""
        if not is_upgrade(request):
            return Response("Expected WebSocket upgrade", status=426)
        record = await self._load()
        user, role = request.headers.get("x-user-id"), request.headers.get("x-user-role")
        if record is None or record.phase is not Phase.CREATED or (record.created["userId"] != user and role != "admin"):
            return Response(json.dumps(error_body("not_found", "Order not found")), status=404,
                            headers={"content-type": "application/json"})
        # per session, exact on every node (the order has one object): sockets a stale session left
        # open never count against the owner's new one (and are closed when the session ends)
        session = f"session:{request.headers.get('x-session-id', '')}"
        cap = int(self.env.get("LIVE_SOCKETS_PER_ORDER", 5))
        if len(self.ctx.get_websockets(session)) >= cap:
            return Response(json.dumps(error_body("too_many_sockets", f"This session follows this order with {cap} "
                                                  f"sockets already; close one first")), status=429,
                            headers={"content-type": "application/json", "retry-after": "60"})
        client, server = WebSocketPair().values()
        self.ctx.accept_websocket(server, [LIVE, session])
        self.ctx.set_websocket_auto_response(WebSocketRequestResponsePair("ping", "pong"))
        self._tell(server, record.created)
        return Response(None, status=101, web_socket=client)

    async def webSocketClose(self, ws: Any, code: int, reason: str, was_clean: bool) -> None:
        ws.close(code, reason)

    # -- transitions ----------------------------------------------------------------------
    async def _recovered(self) -> OrderRecord | None:
        """The record, after finishing or undoing a creation a crash interrupted."""
        record = await self._load()
        if record is not None and record.phase is Phase.RESERVING:
            order_id = record.spec["orderId"]
            # void before undoing: a write of this attempt still on its way can then never land
            written = await (await self._orders()).void(ObjectId(order_id), record.attempt)
            if written is not None:
                log.warning("order %s: completing creation interrupted after the write", order_id)
                written.pop("attempt", None)
                await self._settle(OrderRecord(Phase.CREATED, record.spec, record.attempt, written))
            else:
                log.warning("order %s: undoing creation interrupted before the write", order_id)
                await self._compensate(record.spec, record.attempt, Phase.INTERRUPTED)
            record = await self._load()
        return record

    async def _created(self) -> OrderRecord:
        record = await self._recovered()
        if record is None or record.phase is not Phase.CREATED:
            raise NotFound("Order not found")
        return record

    async def _transition(self, record: OrderRecord, changes: dict[str, Any], steps: list[Step]) -> dict[str, Any]:
        order = record.created
        order.update(changes)
        order["version"] += 1
        order["updatedAt"] = now()
        record.pending = [*steps, Step.SAVE]
        await self._checkpoint(record)
        await self._run_pending(record)
        return order_out(order)

    async def _run_pending(self, record: OrderRecord) -> None:
        orders = await self._orders()
        order = record.created
        order_id = str(order["_id"])
        for step in list(record.pending):
            match step:
                case Step.RELEASE_STOCK:
                    for item in order["items"]:
                        await self._stock(item["productId"]).release(item["productId"], order_id, record.attempt)
                case Step.FINALIZE_STOCK:
                    for item in order["items"]:
                        await self._stock(item["productId"]).finalize(item["productId"], order_id)
                case Step.RESTOCK:  # a paid order cancelled: its hold is gone, the stock comes back once
                    for item in order["items"]:
                        await self._stock(item["productId"]).restock(item["productId"], order_id, item["quantity"])
                case Step.UNCLAIM:  # paid or cancelled: no longer one of the shopper's unpaid orders
                    await self._holds(order["userId"]).release(order_id)
                case Step.SAVE:
                    await orders.save(order)
            record.pending.remove(step)
            await self._store(record)
        await self._settle(record)

    def _check_move(self, order: dict[str, Any], target: str) -> None:
        if target not in TRANSITIONS[order["status"]]:
            raise Conflict(f"cannot move an order from {order['status']} to {target}")

    async def begin_payment(self, payment_id: str, user_id: str, is_admin: bool = False,
                            in_progress_s: float = 300.0) -> dict[str, Any]:
        """Let one payment at a time run for this order: the order (with `total_minor`) or Conflict.

        Only the owner (or an admin) may: anyone else gets NotFound and learns nothing.
        """
        async def run() -> dict[str, Any]:
            record = await self._created()
            order = record.created
            if order["userId"] != user_id and not is_admin:
                raise NotFound("Order not found")
            if payment_id in order["payments"]:  # a retry of the payment that paid it: let it report so
                return {**order_out(order), "total_minor": order["total_minor"]}
            if order["paymentStatus"] == "paid" or order["status"] != "pending":
                raise Conflict(f"order is {order['status']} and {order['paymentStatus']}: it cannot be paid")
            paying = record.paying
            if paying and paying.payment != payment_id and paying.until > time.time():
                raise Conflict("another payment for this order is in progress")
            record.paying = PaymentInProgress(payment_id, time.time() + in_progress_s)
            await self._store(record)
            return {**order_out(order), "total_minor": order["total_minor"]}
        return await self._serial(run)

    async def release_payment(self, payment_id: str) -> None:
        """The payment was refused before reaching the provider: let another one run."""
        async def run() -> None:
            record = await self._created()
            if record.paying is not None and record.paying.payment == payment_id:
                record.paying = None
                await self._store(record)
        await self._serial(run)

    async def mark_refunded(self, payment_id: str, refunded_minor: int) -> dict[str, Any]:
        """A refund went through; a full refund marks the order's payment refunded."""
        async def run() -> dict[str, Any]:
            record = await self._created()
            order = record.created
            if payment_id not in order["payments"] or refunded_minor < order["total_minor"]:
                return order_out(order)
            if order["paymentStatus"] == "refunded":
                return order_out(order)
            return await self._transition(record, {"paymentStatus": "refunded"}, [])
        return await self._serial(run)

    async def mark_paid(self, payment_id: str, amount_minor: int, currency: str) -> dict[str, Any]:
        """Idempotent per payment id; the amount and currency must be the order's."""
        async def run() -> dict[str, Any]:
            record = await self._created()
            order = record.created
            if payment_id in order["payments"]:
                return order_out(order)
            if order["paymentStatus"] == "paid":
                raise Conflict("order is already paid")
            mismatch = pays(order["total_minor"], order["currency"], amount_minor, currency)  # (payments.settlement's)
            if mismatch is not None:
                raise Unprocessable(f"payment of {mismatch}, the order's total")
            self._check_move(order, "confirmed")
            record.paying = None
            # paid: the stock is sold, so its hold leaves the product document now (holds are only
            # for unpaid orders, which keeps that document small on a busy product)
            return await self._transition(record, {"status": "confirmed", "paymentStatus": "paid",
                                                   "paymentId": payment_id, "stockFinalized": True,
                                                   "payments": order["payments"] + [payment_id]},
                                          [Step.FINALIZE_STOCK, Step.UNCLAIM])
        return await self._serial(run)

    async def mark_payment_failed(self, payment_id: str, reason: str = "") -> dict[str, Any]:
        """A failed payment keeps the order pending (the client may pay again)."""
        async def run() -> dict[str, Any]:
            record = await self._created()
            order = record.created
            if order["status"] != "pending":
                return order_out(order)
            if record.paying is not None and record.paying.payment == payment_id:
                record.paying = None
            return await self._transition(record, {"paymentStatus": "failed"}, [])
        return await self._serial(run)

    async def set_status(self, status: str) -> dict[str, Any]:
        """An admin's move; delivery sells the stock for good (if payment had not already)."""
        if status == "cancelled":
            return await self.cancel()

        async def run() -> dict[str, Any]:
            record = await self._created()
            self._check_move(record.created, status)
            steps = [Step.FINALIZE_STOCK] if status == "delivered" else []
            return await self._transition(record, {"status": status}, steps)
        return await self._serial(run)

    async def cancel(self, reason: str = "cancelled") -> dict[str, Any]:
        """Cancel and give the stock back, exactly once."""
        return await self._serial(lambda: self._cancel(reason))

    async def _cancel(self, reason: str) -> dict[str, Any]:
        record = await self._created()
        order = record.created
        if order["status"] == "cancelled":
            return order_out(order)
        self._check_move(order, "cancelled")
        give_back = Step.RESTOCK if order.get("stockFinalized") else Step.RELEASE_STOCK
        return await self._transition(record, {"status": "cancelled", "cancelReason": reason},
                                      [give_back, Step.UNCLAIM])

    async def get(self) -> dict[str, Any]:
        return order_out((await self._created()).created)

    async def forget(self) -> None:
        """The order document was deleted: drop this object's state too."""
        await self.ctx.storage.delete_all()

    # -- recovery and expiry --------------------------------------------------------------
    async def alarm(self, info: Any = None) -> None:
        await self._serial(self._on_alarm)

    async def _on_alarm(self) -> None:
        record = await self._recovered()
        if record is None or record.phase is not Phase.CREATED:
            return
        if record.pending:
            await self._run_pending(record)
        order = record.created
        expires = order["expiresAt"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        if order["status"] == "pending" and expires <= datetime.now(timezone.utc):
            await self._cancel("payment timeout")
