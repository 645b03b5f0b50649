"""ProductStock: one per product, the authority on its stock and the holds of unpaid orders.

Reservations never serialize on one MongoDB document (whose holds would grow with every unpaid
order). Each step — reserve,
release, finalize (sold), restock — is a storage-only read-modify-write, so the input gate makes
it exact under any concurrency, and exactly once per order id (`holds`, `restocked`). The
product document's `stock` is a read model: written after each change, coalesced (one write in
flight per product carries the latest value), before the caller gets its answer, so a client
reads its own writes. A change not yet written keeps an alarm armed, so after a crash the alarm
writes it. `stock + Σ holds + sold − restocked == initial` holds inside this object.

Storage is one small key per fact — `stock`, `hold:<orderId>`, `restocked:<orderId>`,
`released:<orderId>` (the last creation attempt undone: a reservation of it arriving late, from
a request the network held back, is refused) — so each
step reads and writes a few bytes however many unpaid orders a product has (one value holding
every hold made each reservation cost more as holds piled up).

It also keeps what an order line needs (name, price, currency, active), read from the product
document on first use and dropped by `product_changed()` when an admin edits the product.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bson import ObjectId
from pymongo.errors import PyMongoError

from durable import DurableObject
from durable.mongo_pool import database_known_down, pooled_database
from models.errors_domain import Conflict, DatabaseUnavailable

from ..stores.product_cache import cache_for

log = logging.getLogger("rest_shop.stock")
STOCK, PRODUCT_ID, HOLD, RESTOCKED, RELEASED = "stock", "productId", "hold:", "restocked:", "released:"
LEGACY_STATE = "state"  # the one-value layout of earlier versions, moved to keys on first load
SYNC_RETRY_MS = 1000
LINE_FIELDS = {"name": 1, "price_minor": 1, "currency": 1, "isActive": 1, "stock": 1, "holds": 1, "restocked": 1}


class ProductStock(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._product: dict[str, Any] | None = None   # name, price_minor, currency, isActive
        self._version = 0      # changes made by this instance
        self._written = 0      # of those, the last one the read model has
        self._writing = asyncio.Lock()

    async def _collection(self) -> Any:
        return (await pooled_database(self.env))["products"]

    async def _load(self, product_id: str, for_line: bool = False) -> int | None:
        """The stock on hand (from storage; the first time, taken over from the product document);
        None when there is no such product. Only an order line (`for_line`) needs the product's
        fields read again after a restart: a release during an outage must not wait for them."""
        stock = await self.ctx.storage.get(STOCK)
        if stock is not None and (self._product is not None or not for_line):
            return int(stock)

        async def load() -> None:
            if await database_known_down(self.env):
                raise DatabaseUnavailable("products")
            try:
                doc = await (await self._collection()).find_one({"_id": ObjectId(product_id)}, LINE_FIELDS)
            except PyMongoError:  # down, or refusing: the caller gets a retryable 503, not a crash
                raise DatabaseUnavailable("products") from None
            if doc is None:
                return
            self._product = {k: doc[k] for k in ("name", "price_minor", "currency", "isActive")}
            if await self.ctx.storage.get(STOCK) is None:  # first use: take over the bookkeeping
                legacy = await self.ctx.storage.get(LEGACY_STATE)
                if legacy is not None:
                    holds, restocked, stock = legacy["holds"], legacy["restocked"], legacy["stock"]
                else:
                    holds = {h["o"]: int(h["q"]) for h in doc.get("holds") or []}
                    restocked, stock = list(doc.get("restocked") or []), int(doc.get("stock", 0))
                await self.ctx.storage.put({STOCK: stock, PRODUCT_ID: product_id,
                                            **{HOLD + o: q for o, q in holds.items()},
                                            **{RESTOCKED + o: True for o in restocked}})
                await self.ctx.storage.delete(LEGACY_STATE)
        await self.ctx.block_concurrency_while(load)
        stock = await self.ctx.storage.get(STOCK)
        return None if stock is None else int(stock)

    async def _changed(self, values: dict[str, Any], gone: str | None = None) -> bool:
        """Keep the change (durable before the reply), then bring the read model up to it;
        False when the database could not be written (the alarm will)."""
        await self.ctx.storage.put(values)
        if gone is not None:
            await self.ctx.storage.delete(gone)
        self._version += 1
        await self.ctx.storage.set_alarm(int(time.time() * 1000) + SYNC_RETRY_MS)
        if str(self.env.get("STOCK_TEST_PAUSE", "")) == "after-hold":  # test hook: killed here, durably held
            await self.ctx.storage.sync()
            print("STOCK_TEST_PAUSE reached: after-hold", flush=True)
            await asyncio.Event().wait()
        return await self._write_read_model(self._version, wait=False)

    async def _write_read_model(self, version: int, wait: bool = True) -> bool:
        """One write in flight per product, carrying the newest stock: waiters share it. Unless
        `wait`, a database known to be down is not waited for: the caller answers 503 at once and
        the alarm writes the change later (an order would otherwise wait out two timeouts)."""
        async with self._writing:
            if self._written >= version:
                return True
            if not wait and await database_known_down(self.env):
                return False
            latest = self._version
            product_id, stock = await self.ctx.storage.get(PRODUCT_ID), await self.ctx.storage.get(STOCK)
            try:
                collection = await self._collection()
                await collection.update_one({"_id": ObjectId(product_id)}, {"$set": {"stock": stock}})
            except PyMongoError as exc:  # the alarm tries again; the stock itself is safe here
                log.warning("product %s: stock read model not written (%s)", product_id, type(exc).__name__)
                return False
            self._written = latest
            cache_for(collection.database.name).invalidate()
            if self._written == self._version:
                await self.ctx.storage.delete_alarm()
            return True

    def _line(self, stock: int, ok: bool) -> dict[str, Any]:
        assert self._product is not None
        return {"ok": ok, "found": True, "available": stock, **self._product}

    async def reserve(self, product_id: str, order_id: str, quantity: int, attempt: int = 0) -> dict[str, Any]:
        """Hold `quantity` for `order_id` once: `ok`, what is `available`, and the line's product
        fields; `found` False for no such product, `isActive` False for a withdrawn one.
        `attempt` is the order's creation attempt: one already released comes too late (Conflict)."""
        stock = await self._load(product_id, for_line=True)
        if stock is None:
            return {"ok": False, "found": False, "available": 0}
        if await self.ctx.storage.get(HOLD + order_id) is not None:  # a retry of a reservation that happened
            return self._line(stock, True)
        released = await self.ctx.storage.get(RELEASED + order_id)
        if released is not None and released >= attempt:
            # a request delayed in the network past the order's undoing (its caller gave up, and
            # released): holding now would keep stock for an order that will never exist
            raise Conflict(f"order {order_id}: attempt {attempt} was already undone; its reservation came too late")
        if not self._product["isActive"] or stock < quantity:  # type: ignore[index]
            return self._line(stock, False)
        if not await self._changed({STOCK: stock - quantity, HOLD + order_id: quantity}):
            # the database is down: no order can be written either, so hold nothing (as before the
            # object existed); an undo commutes with whatever interleaved during the write
            await self.ctx.storage.put(STOCK, await self.ctx.storage.get(STOCK) + quantity)
            await self.ctx.storage.delete(HOLD + order_id)
            raise DatabaseUnavailable("products")
        return self._line(stock - quantity, True)

    async def release(self, product_id: str, order_id: str, attempt: int = 0) -> bool:
        """Give a held quantity back, once; and refuse, from now on, a reservation of this order
        attempt still on its way (the release may come first when the reserve was cut mid-call)."""
        stock = await self._load(product_id)
        if stock is None:
            return False
        held = await self.ctx.storage.get(HOLD + order_id)
        released = await self.ctx.storage.get(RELEASED + order_id)
        if released is None or released < attempt:
            await self.ctx.storage.put(RELEASED + order_id, attempt)
        if held is None:
            return False
        await self._changed({STOCK: stock + held}, gone=HOLD + order_id)
        return True

    async def finalize(self, product_id: str, order_id: str) -> bool:
        """Paid or delivered: the held quantity is sold for good (the stock figure does not move)."""
        if await self._load(product_id) is None:
            return False
        return bool(await self.ctx.storage.delete(HOLD + order_id))

    async def restock(self, product_id: str, order_id: str, quantity: int) -> bool:
        """A sold quantity comes back (a paid order cancelled), once per order."""
        stock = await self._load(product_id)
        if stock is None or await self.ctx.storage.get(RESTOCKED + order_id) is not None:
            return False
        await self._changed({STOCK: stock + quantity, RESTOCKED + order_id: True})
        return True

    async def set_stock(self, product_id: str, stock: int) -> bool:
        """An admin sets the stock on hand (holds of unpaid orders are not part of it)."""
        if await self._load(product_id) is None:
            return False
        await self._changed({STOCK: stock})
        return True

    async def product_changed(self) -> None:
        """The product document was edited: read name, price and status afresh next time."""
        self._product = None

    async def snapshot(self, product_id: str) -> dict[str, Any] | None:
        """The authoritative figures: stock on hand, and the holds of unpaid orders."""
        stock = await self._load(product_id)
        if stock is None:
            return None
        holds = await self.ctx.storage.list(prefix=HOLD)
        restocked = await self.ctx.storage.list(prefix=RESTOCKED)
        return {"stock": stock, "holds": [{"o": key[len(HOLD):], "q": q} for key, q in holds.items()],
                "restocked": [key[len(RESTOCKED):] for key in restocked]}

    async def alarm(self, info: Any = None) -> None:
        """A change the read model may have missed (a crash, the database down): write it now."""
        if await self.ctx.storage.get(STOCK) is None:
            return
        self._version += 1
        await self._write_read_model(self._version)
        if self._written < self._version:
            raise DatabaseUnavailable("products")  # retried with backoff by the runtime
