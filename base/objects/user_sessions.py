"""UserSessions: one per user, the answer to "does this token still speak for its user?".

The user document holds the truth (exists, role, `tokenGen`); this object keeps it in memory,
so checking a token on every authenticated request costs one object call and no database read.
Changes made through the API (delete, role, password, logout-all) go through the object, which
writes the database first and its own state second: they take effect on the next request, on
every service. Edits made behind the API's back (the admin CLI, a database console) are picked
up when the cached state is older than SESSION_REFRESH_S. Single-token logouts are the object's
own storage (`revoked:<sid>` until the token would expire anyway).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from pymongo.errors import ConnectionFailure

from durable import DurableObject
from durable.mongo_pool import database_known_down, pooled_database
from models.errors_domain import DatabaseUnavailable

from ..stores.users import UserStore

log = logging.getLogger("rest_shop.sessions")
REVOKED = "revoked:"


class UserSessions(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.refresh_s = float(env.get("SESSION_REFRESH_S", 30))
        self._state: dict[str, Any] | None = None
        self._loaded_at = 0.0

    async def _users(self) -> UserStore:
        return UserStore(await pooled_database(self.env))

    def _remember(self, state: dict[str, Any]) -> dict[str, Any]:
        self._state, self._loaded_at = state, time.monotonic()
        return state

    async def _current(self, user_id: str) -> dict[str, Any]:
        """The cached state, re-read when stale; a database that is down keeps a state we had (and
        one known down is not waited for: every signed-in request would wait out its timeout)."""
        if self._state is not None and time.monotonic() - self._loaded_at < self.refresh_s:
            return self._state

        async def load() -> None:
            if self._state is not None and time.monotonic() - self._loaded_at < self.refresh_s:
                return  # another event loaded it while this one waited at the gate
            if self._state is not None and await database_known_down(self.env):
                return
            try:
                self._remember(await (await self._users()).session_state(user_id))
            except ConnectionFailure:
                if self._state is None:
                    raise DatabaseUnavailable("users") from None
                log.warning("user %s: could not refresh the session state; using the one from %.0f s ago",
                            user_id, time.monotonic() - self._loaded_at)
        await self.ctx.block_concurrency_while(load)
        assert self._state is not None
        return self._state

    async def check(self, user_id: str, sid: str, gen: int, role: str) -> str | None:
        """None when the token is good; else why it is not (for the 401's message)."""
        state = await self._current(user_id)
        if not state["exists"]:
            return "the account no longer exists"
        if gen != state["gen"]:
            return "the session has ended (logged out everywhere, or the password or role changed)"
        if role != state["role"]:
            return "the account's role has changed"
        if await self.ctx.storage.get(REVOKED + sid) is not None:
            return "this token was logged out"
        return None

    async def logged_in(self, user_id: str, role: str, gen: int) -> None:
        """Login just read the user document. A change that raced it (a reset, logout everywhere)
        may have been remembered since with a newer generation, or the account deleted: the
        generation only grows, and a deletion is final, so an older read never replaces them."""
        state = self._state
        if state is not None and (not state["exists"] or state["gen"] > gen):
            return
        self._remember({"exists": True, "role": role, "gen": gen})

    async def logout(self, sid: str, expires_at: int) -> None:
        """End one token; its entry goes when the token would have expired anyway."""
        now = time.time()
        for key, until in (await self.ctx.storage.list(prefix=REVOKED)).items():
            if until < now:
                await self.ctx.storage.delete(key)
        await self.ctx.storage.put(REVOKED + sid, expires_at)

    async def _change(self, user_id: str, unset: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
        async def write() -> dict[str, Any]:
            try:
                return self._remember(await (await self._users()).new_generation(user_id, unset, **fields))
            except ConnectionFailure:
                raise DatabaseUnavailable("users") from None
        return await self.ctx.block_concurrency_while(write)

    async def end_all(self, user_id: str) -> int:
        """Logout everywhere: every token issued so far is void. Returns the new generation."""
        return int((await self._change(user_id))["gen"])

    async def set_password(self, user_id: str, password_hash: str) -> int:
        return int((await self._change(user_id, password=password_hash))["gen"])

    async def recover(self, user_id: str, password_hash: str) -> int:
        """A reset through a mailed link: whoever reads the address's mail owns the account. The
        password is theirs, the address proven, and every provider linked before is removed (a
        squatter may have linked his own); -1 when the account is gone."""
        return int((await self._change(user_id, ("identities",), password=password_hash,
                                       emailVerified=True))["gen"])

    async def set_role(self, user_id: str, role: str) -> bool:
        return bool((await self._change(user_id, role=role))["exists"])

    async def delete_user(self, user_id: str) -> bool:
        """Delete the account; its tokens die with it."""
        async def delete() -> bool:
            try:
                gone = await (await self._users()).delete(user_id)
            except ConnectionFailure:
                raise DatabaseUnavailable("users") from None
            self._remember({"exists": False, "role": None, "gen": -1})
            return gone
        gone = await self.ctx.block_concurrency_while(delete)
        await self.ctx.storage.delete_all()  # single-token logouts mean nothing for a deleted account
        return bool(gone)
