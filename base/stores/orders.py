"""The orders collection: a read model written only by each order's OrderLock."""
from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.money import to_major

from models.ids import oid
from models.stamps import iso


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

    async def insert(self, doc: dict[str, Any]) -> None:
        """Idempotent: a retried insert of the same order is not an error."""
        try:
            await self.col.insert_one(dict(doc))
        except DuplicateKeyError:
            pass

    async def get(self, order_id: str) -> dict[str, Any] | None:
        key = oid(order_id)
        return await self.col.find_one({"_id": key}) if key else None

    async def save(self, doc: dict[str, Any]) -> None:
        """Write the OrderLock's version unless a newer one is already there."""
        await self.col.replace_one({"_id": doc["_id"], "version": {"$lt": doc["version"]}}, dict(doc))

    async def delete(self, order_id: str) -> bool:
        key = oid(order_id)
        return bool(key) and (await self.col.delete_one({"_id": key})).deleted_count == 1

    async def list(self, match: dict[str, Any], page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = await self.col.count_documents(match)
        cursor = self.col.find(match).sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
        docs = await cursor.skip((page - 1) * limit).limit(limit).to_list()
        return [order_out(d) for d in docs], total
