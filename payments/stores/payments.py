"""The payments collection: one record per idempotency record, written before the provider call."""
from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError
from pymongo.asynchronous.database import AsyncDatabase

from models.ids import oid
from models.money import to_major
from models.stamps import iso, now


def payment_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": str(doc["_id"]), "orderId": doc["orderId"], "userId": doc["userId"],
            "paymentMethod": doc["paymentMethod"], "provider": doc["provider"], "status": doc["status"],
            "amount": to_major(doc["amount_minor"]), "currency": doc["currency"],
            "transactionId": doc.get("transactionId"), "refundedAmount": to_major(doc.get("refunded_minor", 0)),
            "failureReason": doc.get("failureReason"), "createdAt": iso(doc["createdAt"]),
            "updatedAt": iso(doc["updatedAt"])}


class PaymentStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.col = db["payments"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index([("userId", ASCENDING), ("createdAt", DESCENDING)], name="user_created")
        await self.col.create_index("orderId", name="order")
        await self.col.create_index("transactionId", sparse=True, name="transaction")
        await self.col.create_index([("status", ASCENDING), ("updatedAt", ASCENDING)], name="status_updated")

    async def start(self, payment_id: str, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the record (status `processing`), or find the one an earlier attempt left: (doc, created).
        One insert on the common path; the find only when a retry meets its own record."""
        stamp = now()
        doc = {"_id": oid(payment_id), **fields, "status": "processing", "refunded_minor": 0, "refunds": [],
               "createdAt": stamp, "updatedAt": stamp}
        try:
            await self.col.insert_one(doc)
            return doc, True
        except DuplicateKeyError:
            existing = await self.get(payment_id)
            assert existing is not None
            return existing, False

    async def apply(self, payment: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Set `fields` on a record the caller holds, in one command: the caller's copy, updated, is
        the answer (no read back; what others wrote meanwhile is theirs to report)."""
        fields["updatedAt"] = now()
        await self.col.update_one({"_id": payment["_id"]}, {"$set": fields})
        return {**payment, **fields}

    # update_one then get, not find_one_and_update: the embedded server's findAndModify scans the
    # collection (35 ms per call at 3,000 payments, against 1 ms), and callers only read the result
    async def update(self, payment_id: str, **fields: Any) -> dict[str, Any] | None:
        fields["updatedAt"] = now()
        await self.col.update_one({"_id": oid(payment_id)}, {"$set": fields})
        return await self.get(payment_id)

    async def add_refund(self, payment_id: str, refund: dict[str, Any], status: str,
                         **fields: Any) -> dict[str, Any] | None:
        """Record a provider refund once (by its id), with the refunded total, the status and `fields`
        in one write (no reader sees one without the others). The total only rises (`$max`), so it
        agrees with `refund_total` (the provider's own figure from a webhook) in whichever order the
        two land; the write is conditional on the refunds it was computed from (retried if another
        refund landed in between)."""
        while True:
            doc = await self.get(payment_id)
            if doc is None or any(r["id"] == refund["id"] for r in doc["refunds"]):
                return doc
            total = sum(r["amount_minor"] for r in doc["refunds"]) + refund["amount_minor"]
            result = await self.col.update_one(
                {"_id": doc["_id"], "refunds": {"$size": len(doc["refunds"])}},
                {"$push": {"refunds": refund}, "$max": {"refunded_minor": total},
                 "$set": {"status": status, "updatedAt": now(), **fields}})
            if result.modified_count == 1:
                return await self.get(payment_id)

    async def refund_total(self, payment_id: str, total_minor: int, status: str) -> dict[str, Any] | None:
        """The provider says `total_minor` has been refunded in all: raise our figure to it (never lower)."""
        await self.col.update_one({"_id": oid(payment_id), "refunded_minor": {"$lt": total_minor}},
                                  {"$set": {"refunded_minor": total_minor, "status": status, "updatedAt": now()}})
        return await self.get(payment_id)

    async def get(self, payment_id: str) -> dict[str, Any] | None:
        key = oid(payment_id)
        return await self.col.find_one({"_id": key}) if key else None

    def open_and_idle(self, statuses: tuple[str, ...], idle_since: Any, created_after: Any,
                            limit: int) -> Any:
        """Open payments with a provider reference, untouched (and unchecked) since `idle_since`."""
        return self.col.find({"status": {"$in": list(statuses)}, "transactionId": {"$nin": [None]},
                              "updatedAt": {"$lte": idle_since}, "createdAt": {"$gte": created_after},
                              "$or": [{"checkedAt": {"$exists": False}}, {"checkedAt": {"$lte": idle_since}}]},
                             limit=limit)

    async def mark_checked(self, payment_id: Any) -> None:
        """The provider was asked about it just now (the next sweep leaves it a while)."""
        await self.col.update_one({"_id": payment_id}, {"$set": {"checkedAt": now()}})

    async def by_transaction(self, transaction_id: str) -> dict[str, Any] | None:
        return await self.col.find_one({"transactionId": transaction_id})

    async def list(self, match: dict[str, Any], page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = await self.col.count_documents(match)
        cursor = self.col.find(match).sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
        docs = await cursor.skip((page - 1) * limit).limit(limit).to_list()
        return [payment_out(d) for d in docs], total
