"""The products collection: the catalogue. A product's `stock` here is a read model written by
its ProductStock object, the authority on stock and the holds of unpaid orders."""
from __future__ import annotations

import re
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.errors_domain import Conflict
from models.ids import oid
from models.money import to_major, to_minor
from models.products import ProductQuery
from models.stamps import iso, now

from .product_cache import cache_for

PUBLIC = {"holds": 0, "restocked": 0, "keywords": 0}  # bookkeeping (and that of older documents) stays in
SORTS = {"price_asc": [("price_minor", ASCENDING), ("_id", ASCENDING)],
         "price_desc": [("price_minor", DESCENDING), ("_id", ASCENDING)],
         "name": [("name", ASCENDING), ("_id", ASCENDING)],
         "newest": [("createdAt", DESCENDING), ("_id", DESCENDING)]}
_TOKEN = re.compile(r"\w+", re.UNICODE)


def keywords(*texts: str | None) -> list[str]:
    """Lower-cased word tokens for search (no $text: SecantusDB has no text indexes: ARCHITECTURE.md, Search)."""
    return sorted({t for text in texts if text for t in _TOKEN.findall(text.lower())})


def product_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": str(doc["_id"]), "name": doc["name"], "price": to_major(doc["price_minor"]),
            "currency": doc["currency"], "description": doc.get("description", ""),
            "category": doc.get("category", "general"), "stock": doc["stock"], "sku": doc.get("sku"),
            "isActive": doc["isActive"], "productImage": doc.get("productImage"),
            "createdAt": iso(doc["createdAt"]), "updatedAt": iso(doc["updatedAt"])}


def _to_doc(fields: dict[str, Any]) -> dict[str, Any]:
    doc = dict(fields)
    if "price" in doc:
        doc["price_minor"] = to_minor(doc.pop("price"))
    return doc


class ProductStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.col = db["products"]
        self.cache = cache_for(db.name)

    async def ensure_indexes(self) -> None:
        await self.col.create_index("sku", unique=True, sparse=True, name="sku_unique")
        await self.col.create_index("keywords", name="keywords")
        await self.col.create_index([("category", ASCENDING), ("isActive", ASCENDING)], name="category_active")
        await self.col.create_index("price_minor", name="price")
        await self.col.create_index([("createdAt", DESCENDING)], name="created")

    async def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        stamp = now()
        doc = _to_doc({k: v for k, v in fields.items() if v is not None or k != "sku"})
        doc.update(createdAt=stamp, updatedAt=stamp,
                   keywords=keywords(doc["name"], doc.get("description"), doc.get("category")))
        try:
            result = await self.col.insert_one(doc)
        except DuplicateKeyError:
            raise Conflict(f"SKU {doc.get('sku')!r} is already used by another product") from None
        doc["_id"] = result.inserted_id
        self.cache.invalidate()
        return product_out(doc)

    async def get(self, product_id: str, include_inactive: bool = True) -> dict[str, Any] | None:
        key = oid(product_id)
        if key is None:
            return None
        cache_key = ("id", key)
        doc = self.cache.get(cache_key)
        if doc is None:
            generation = self.cache.generation
            doc = await self.col.find_one({"_id": key}, PUBLIC)
            if doc is None:
                return None
            doc = product_out(doc)
            self.cache.put(cache_key, doc, generation)
        if not include_inactive and not doc["isActive"]:
            return None
        return dict(doc)

    async def list(self, query: ProductQuery, include_inactive: bool) -> tuple[list[dict[str, Any]], int]:
        match: dict[str, Any] = {} if include_inactive else {"isActive": True}
        if query.category:
            match["category"] = query.category
        if query.search:
            tokens = keywords(query.search)
            if tokens:
                match["keywords"] = {"$all": tokens}
        price: dict[str, int] = {}
        if query.minPrice is not None:
            price["$gte"] = to_minor(query.minPrice)
        if query.maxPrice is not None:
            price["$lte"] = to_minor(query.maxPrice)
        if price:
            match["price_minor"] = price
        cache_key = ("list", query.model_dump_json(), include_inactive)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return [dict(d) for d in cached[0]], cached[1]
        generation = self.cache.generation
        total = await self.col.count_documents(match)
        cursor = self.col.find(match, PUBLIC).sort(SORTS[query.sort]).skip(query.skip)
        items = [product_out(d) for d in await cursor.limit(query.limit).to_list()]
        self.cache.put(cache_key, (items, total), generation)
        return [dict(d) for d in items], total

    async def patch(self, product_id: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        key = oid(product_id)
        if key is None:
            return None
        current = await self.col.find_one({"_id": key}, {"name": 1, "description": 1, "category": 1})
        if current is None:
            return None
        update = _to_doc(fields)
        unset = {"sku": ""} if "sku" in update and update["sku"] is None else {}
        if unset:
            del update["sku"]
        update["updatedAt"] = now()
        if {"name", "description", "category"} & fields.keys():
            merged = {**current, **{k: v for k, v in fields.items() if k in ("name", "description", "category")}}
            update["keywords"] = keywords(merged.get("name"), merged.get("description"), merged.get("category"))
        ops: dict[str, Any] = {"$set": update}
        if unset:
            ops["$unset"] = unset
        try:
            await self.col.update_one({"_id": key}, ops)
            doc = await self.col.find_one({"_id": key}, PUBLIC)
        except DuplicateKeyError:
            raise Conflict(f"SKU {fields.get('sku')!r} is already used by another product") from None
        self.cache.invalidate()  # after the write: a read that overlapped it will not be cached
        return product_out(doc) if doc else None
