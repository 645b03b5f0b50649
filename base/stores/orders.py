"""The orders collection: a read model written only by each order's OrderLock.

An order whose creation was interrupted and then undone leaves a stub under its id (`void`), so
that the order's write, if it was still on its way (a node cut off from the database mid-way
whose packets arrive after the heal), fails instead of landing without its stock. Stubs are
never shown, and go after VOID_KEPT_S: far longer than TCP keeps retransmitting (~15 min).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.errors_domain import OrderVoided
from models.ids import oid
from models.money import to_major
from models.stamps import iso

VOID = "void"
VOID_KEPT_S = 3600


def order_out(doc: dict[str, Any]) -> dict[str, Any]:
    items = [{"productId": i["productId"], "name": i["name"], "unitPrice": to_major(i["unit_minor"]),
              "quantity": i["quantity"], "lineTotal": to_major(i["unit_minor"] * i["quantity"])}
             for i in doc["items"]]
    return {"_id": str(doc["_id"]), "userId": doc["userId"], "product": doc["items"][0]["productId"],
            "items": items, "quantity": sum(i["quantity"] for i in doc["items"]),
            "totalAmount": to_major(doc["total_minor"]), "currency": doc["currency"], "status": doc["status"],
            "paymentStatus": doc["paymentStatus"], "paymentId": doc.get("paymentId"),
            "shippingAddress": doc.get("shippingAddress"), "expiresAt": iso(doc.get("expiresAt")),
            "createdAt": iso(doc["createdAt"]), "updatedAt": iso(doc["updatedAt"])}


class OrderStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.col = db["orders"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("userId", ASCENDING), ("createdAt", DESCENDING)], name="user_created")
        await self.col.create_index([("status", ASCENDING), ("paymentStatus", ASCENDING)], name="status_payment")
        await self.col.create_index([("createdAt", DESCENDING)], name="created")
        await self.col.create_index([("voidedAt", ASCENDING)], name="voided_ttl", expireAfterSeconds=VOID_KEPT_S)

    async def insert(self, doc: dict[str, Any], attempt: int = 0) -> None:
        """Write attempt `attempt` of a new order, unless its creation was voided since (a write
        that reaches the database late, from a node cut off mid-creation, must not land after the
        order was undone: OrderVoided). Idempotent for the same attempt."""
        try:
            await self.col.replace_one({"_id": doc["_id"], VOID: True, "attempt": {"$lt": attempt}},
                                       {**doc, "attempt": attempt}, upsert=True)
        except DuplicateKeyError:
            there = await self.col.find_one({"_id": doc["_id"]}, {VOID: 1, "attempt": 1})
            if there is None or there.get(VOID) or there.get("attempt", 0) != attempt:
                raise OrderVoided(f"order {doc['_id']}: attempt {attempt} was undone before its write landed") from None

    async def void(self, order_id: ObjectId, attempt: int) -> dict[str, Any] | None:
        """Undo an interrupted creation for good: after this no write of attempts up to `attempt`
        can land (a stub holds the id, gone after VOID_KEPT_S). None when voided; the order when a
        write had landed first (then the creation is to be completed, not undone)."""
        for _ in range(3):
            stamp = datetime.now(timezone.utc)
            done = await self.col.update_one({"_id": order_id, VOID: True},
                                             {"$max": {"attempt": attempt}, "$set": {"voidedAt": stamp}})
            if done.matched_count:
                return None
            try:
                await self.col.insert_one({"_id": order_id, VOID: True, "attempt": attempt, "voidedAt": stamp})
                return None
            except DuplicateKeyError:
                there = await self.col.find_one({"_id": order_id})
                if there is not None and not there.get(VOID):
                    return there
        raise RuntimeError(f"order {order_id}: could not void it")  # a stub that keeps vanishing: never

    async def get(self, order_id: str) -> dict[str, Any] | None:
        key = oid(order_id)
        return await self.col.find_one({"_id": key, VOID: {"$exists": False}}) if key else None

    async def save(self, doc: dict[str, Any]) -> None:
        """Write the OrderLock's version unless a newer one is already there."""
        await self.col.replace_one({"_id": doc["_id"], "version": {"$lt": doc["version"]}}, dict(doc))

    async def delete(self, order_id: str) -> bool:
        key = oid(order_id)
        return bool(key) and (await self.col.delete_one({"_id": key})).deleted_count == 1

    async def list(self, match: dict[str, Any], page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        match = {**match, VOID: {"$exists": False}}
        total = await self.col.count_documents(match)
        cursor = self.col.find(match).sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
        docs = await cursor.skip((page - 1) * limit).limit(limit).to_list()
        return [order_out(d) for d in docs], total
