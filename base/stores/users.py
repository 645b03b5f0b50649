"""The users collection: unique, case-insensitive emails."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from models.errors_domain import Conflict
from models.ids import oid
from models.stamps import iso, now

CASE_INSENSITIVE = {"locale": "en", "strength": 2}


def user_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": str(doc["_id"]), "email": doc["email"], "role": doc["role"], "createdAt": iso(doc.get("createdAt")),
            "emailVerified": bool(doc.get("emailVerified")), "hasPassword": doc.get("password") is not None,
            "identities": sorted(doc.get("identities") or {})}


class UserStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self.col = db["users"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("email", unique=True, collation=CASE_INSENSITIVE, name="email_unique_ci")

    async def create(self, email: str, password_hash: str, role: str = "user") -> dict[str, Any]:
        """A signup: the address is unproven until its owner follows the mailed link."""
        return await self._insert({"email": email, "password": password_hash, "role": role, "createdAt": now(),
                                   "emailVerified": False})

    async def _insert(self, doc: dict[str, Any]) -> dict[str, Any]:
        try:
            result = await self.col.insert_one(doc)
        except DuplicateKeyError:
            raise Conflict("Email already registered") from None
        doc["_id"] = result.inserted_id
        return doc

    async def ensure_identity_index(self, provider: str) -> None:
        """At most one account per provider subject (sparse: password-only accounts have none)."""
        await self.col.create_index(f"identities.{provider}", unique=True, sparse=True,
                                    name=f"identity_{provider}_unique")

    async def by_identity(self, provider: str, subject: str) -> dict[str, Any] | None:
        return await self.col.find_one({f"identities.{provider}": subject})

    async def create_federated(self, email: str, provider: str, subject: str) -> dict[str, Any]:
        """A new account signed in through a provider: no password (login with one always fails)."""
        return await self._insert({"email": email, "password": None, "role": "user", "createdAt": now(),
                                   "emailVerified": True, "identities": {provider: subject}})

    async def link(self, email: str, provider: str, subject: str) -> dict[str, Any] | None:
        """Add the provider's subject to the account with this email, only if that account proved
        the address, has no subject of that provider yet and its owner did not unlink that
        provider; the account as it is now (its token generation bumped, so sessions from before
        the link end), or None."""
        return await self.col.find_one_and_update(
            {"email": email, "emailVerified": True, f"identities.{provider}": {"$exists": False},
             f"refusedLinks.{provider}": {"$exists": False}},
            {"$set": {f"identities.{provider}": subject}, "$inc": {"tokenGen": 1}}, collation=CASE_INSENSITIVE,
            return_document=True)

    async def link_to(self, user_id: str, provider: str, subject: str) -> dict[str, Any] | None:
        """Link from a signed-in session: this account gets the subject (None if it has another
        subject of that provider; DuplicateKeyError → Conflict if another account has this one)."""
        try:
            return await self.col.find_one_and_update(
                {"_id": oid(user_id), "$or": [{f"identities.{provider}": {"$exists": False}},
                                              {f"identities.{provider}": subject}]},
                {"$set": {f"identities.{provider}": subject}, "$unset": {f"refusedLinks.{provider}": ""},
                 "$inc": {"tokenGen": 1}}, return_document=True)
        except DuplicateKeyError:
            raise Conflict(f"This {provider} account is linked to another account") from None

    async def unlink(self, user_id: str, provider: str, all_providers: Iterable[str]) -> dict[str, Any] | None:
        """Remove the provider, never the last way in (a password or another provider must remain),
        and remember that the owner refused it (a sign-in with the address does not link it again);
        sessions from before end. None when it is not linked or is the last way in."""
        return await self.col.find_one_and_update(
            {"_id": oid(user_id), f"identities.{provider}": {"$exists": True},
             "$or": [{"password": {"$ne": None}},
                     *({f"identities.{other}": {"$exists": True}} for other in all_providers if other != provider)]},
            {"$unset": {f"identities.{provider}": ""}, "$set": {f"refusedLinks.{provider}": now()},
             "$inc": {"tokenGen": 1}}, return_document=True)

    async def mark_verified(self, user_id: str, email: str) -> dict[str, Any] | None:
        """The owner of `email` followed the link; None if the account is gone or its email changed."""
        return await self.col.find_one_and_update({"_id": oid(user_id), "email": email},
                                                  {"$set": {"emailVerified": True}}, collation=CASE_INSENSITIVE,
                                                  return_document=True)

    async def by_email(self, email: str) -> dict[str, Any] | None:
        return await self.col.find_one({"email": email}, collation=CASE_INSENSITIVE)

    async def get(self, user_id: str) -> dict[str, Any] | None:
        key = oid(user_id)
        return await self.col.find_one({"_id": key}) if key else None

    async def set_role(self, email: str, role: str) -> bool:
        """By email (the admin CLI): a new role also ends every session held under the old one."""
        result = await self.col.update_one({"email": email}, {"$set": {"role": role}, "$inc": {"tokenGen": 1}},
                                           collation=CASE_INSENSITIVE)
        return result.matched_count == 1

    async def session_state(self, user_id: str) -> dict[str, Any]:
        """What decides whether a token still speaks for this user: exists, role, token generation."""
        key = oid(user_id)
        doc = await self.col.find_one({"_id": key}, {"role": 1, "tokenGen": 1}) if key else None
        if doc is None:
            return {"exists": False, "role": None, "gen": -1}
        return {"exists": True, "role": doc["role"], "gen": int(doc.get("tokenGen", 0))}

    async def new_generation(self, user_id: str, unset: Iterable[str] = (), **fields: Any) -> dict[str, Any]:
        """Set `fields` (and remove `unset`) and bump the token generation in one write: every token
        issued before is void."""
        update: dict[str, Any] = {"$set": fields, "$inc": {"tokenGen": 1}}
        if unset:
            update["$unset"] = {name: "" for name in unset}
        await self.col.update_one({"_id": oid(user_id)}, update)
        return await self.session_state(user_id)

    async def delete(self, user_id: str) -> bool:
        key = oid(user_id)
        return bool(key) and (await self.col.delete_one({"_id": key})).deleted_count == 1
