"""Single-use account tokens (email verification, password reset, login unlock), mailed as links.

Why a collection and not a Durable Object: a token is found by the link alone, from any node; a
document keyed by the token's SHA-256 is that lookup, `find_one_and_delete` makes "used once"
atomic across every process and node, and a TTL index sweeps the unused ones. Only the hash is
stored, so a copy of the database yields no usable link. The raw token is 256 random bits and is
only ever compared as its hash, inside the database's index lookup: timing can tell an attacker
at most how much of a SHA-256 matched, which says nothing about any stored token. Issuing a
token voids the earlier ones of the same purpose and account, so only the newest link works.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any, Literal

from pymongo.asynchronous.database import AsyncDatabase

from models.stamps import now

Purpose = Literal["verify_email", "reset_password", "unlock_login"]
MAX_TOKEN_CHARS = 128


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountTokens:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.col = db["account_tokens"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("expiresAt", expireAfterSeconds=0, name="expires_ttl")
        await self.col.create_index([("userId", 1), ("purpose", 1)], name="user_purpose")

    async def issue(self, purpose: Purpose, user_id: str, email: str, ttl_s: float) -> str:
        """A new token for this account and purpose (the earlier ones stop working)."""
        token = secrets.token_urlsafe(32)
        await self.revoke(user_id, purpose)
        await self.col.insert_one({"_id": _digest(token), "purpose": purpose, "userId": user_id, "email": email,
                                   "expiresAt": now() + timedelta(seconds=ttl_s)})
        return token

    def _query(self, purpose: Purpose, token: str, user_id: str | None = None) -> dict[str, Any] | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        return {"_id": _digest(token), "purpose": purpose, "expiresAt": {"$gt": now()},
                **({"userId": user_id} if user_id is not None else {})}

    async def peek(self, purpose: Purpose, token: str) -> dict[str, Any] | None:
        """The token's record if it is live, leaving it usable (an unlock token survives a typo)."""
        query = self._query(purpose, token)
        return await self.col.find_one(query) if query else None

    async def consume(self, purpose: Purpose, token: str, user_id: str | None = None) -> dict[str, Any] | None:
        """The token's record, once: of two uses (a replay, a double click) exactly one gets it.
        `user_id`: only if it was issued to that account (else it stays usable)."""
        query = self._query(purpose, token, user_id)
        return await self.col.find_one_and_delete(query) if query else None

    async def revoke(self, user_id: str, purpose: Purpose) -> None:
        """Void every token of this account and purpose."""
        await self.col.delete_many({"userId": user_id, "purpose": purpose})
