"""Helpers every store shares: the pooled database, ids and timestamps."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase


async def database(env: Any) -> AsyncDatabase[dict[str, Any]]:
    """The service's database from its MongoPool object (a local-only call)."""
    pool = env.MONGO_POOL
    return await pool.get(pool.id_from_name("global")).local("database")


def now() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def oid(value: str) -> ObjectId | None:
    return ObjectId(value) if ObjectId.is_valid(value) and len(value) == 24 else None
