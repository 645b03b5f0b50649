"""Accounts for tests and benchmarks: a real user document, and a token issued the way login
issues one (so the services' session check accepts it for as long as the account lives)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

from web.tokens import issue_token


def mint_token(db: Any, key: str, role: str = "user", user_id: str | None = None, email: str | None = None,
               **kw: Any) -> str:
    """Create (or re-role) the user `user_id` in `db` (base's database) and return a token for it."""
    user_id = user_id or str(ObjectId())
    email = email or f"{user_id}@test.example"
    db["users"].update_one({"_id": ObjectId(user_id)},
                           {"$setOnInsert": {"email": email, "password": "!", "createdAt": datetime.now(timezone.utc)},
                            "$set": {"role": role}}, upsert=True)
    doc = db["users"].find_one({"_id": ObjectId(user_id)}, {"tokenGen": 1}) or {}
    return issue_token(key, email=email, user_id=user_id, role=role, gen=int(doc.get("tokenGen", 0)), **kw)


def base_database(mongo_uri: str, db_name: str = "rest_shop_api") -> Any:
    return MongoClient(mongo_uri)[db_name]


async def account(shop: Any, email: str, password: str = "correct horse", api: str = "/api") -> tuple[str, str]:
    """Sign up and log in over HTTP (through the gateway's `/api`, or `api=""` on base): (user id, token)."""
    status, body, _ = await shop.call("POST", f"{api}/user/signup", {"email": email, "password": password})
    assert status == 201, body
    return body["user"]["_id"], await login(shop, email, password, api=api)


async def login(shop: Any, email: str, password: str = "correct horse", api: str = "/api", **headers: str) -> str:
    status, body, _ = await shop.call("POST", f"{api}/user/login", {"email": email, "password": password},
                                      headers=headers)
    assert status == 200, body
    return body["token"]
