"""LoginGuard: one per account (its id; for an address no account has, the address's canonical
form: `accounts.limit_key`, so no other spelling of an address gets a fresh guard),
so guessing one account's password from many addresses slows down, without telling anyone
whether the email is registered and without locking its owner out.

Every attempt counts as a failure until `succeeded()` clears the count, so concurrent guesses
are counted too (the input gate serializes `admit`, which awaits only storage). After
LOGIN_FREE_FAILURES failures the next attempt waits LOGIN_FIRST_DELAY_S, and each failure after
that doubles the wait, up to LOGIN_MAX_DELAY_S. Addresses the owner logged in from recently are never held back (their
attempts still count against the per-address limit). From a new address (a new phone, travel)
the owner could be held back for as long as someone keeps guessing, so the first refusal (and
then at most one an hour) says `notify`: the route mails the owner an unlock link, and a login
carrying a live one is never held back.
"""
from __future__ import annotations

import math
import time
from typing import Any

from durable import DurableObject

STATE = "state"
REMEMBER_ADDRESSES_S = 30 * 86400
MAX_ADDRESSES = 10
FORGET_FAILURES_S = 86400
NOTIFY_EVERY_S = 3600  # at most one unlock mail an hour, however long the guessing goes on


class LoginGuard(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.free = int(env.get("LOGIN_FREE_FAILURES", 5))
        self.first_delay_s = float(env.get("LOGIN_FIRST_DELAY_S", 1))
        self.max_delay_s = float(env.get("LOGIN_MAX_DELAY_S", 900))

    async def _state(self) -> dict[str, Any]:
        return await self.ctx.storage.get(STATE) or {"failures": 0, "until": 0.0, "known": {}}

    def _delay_s(self, failures: int) -> float:
        over = failures - self.free  # 0 when the free failures are just used up
        return 0.0 if over < 0 else min(self.max_delay_s, self.first_delay_s * 2.0 ** over)

    async def admit(self, ip: str, unlocked: bool = False) -> dict[str, Any]:
        """May this attempt go ahead? It is counted as a failure until `succeeded()` says otherwise.
        `unlocked`: it carries the owner's unlock link, so it is never held back."""
        now = time.time()
        state = await self._state()
        known = ip in state["known"] and state["known"][ip] > now - REMEMBER_ADDRESSES_S
        if now < state["until"] and not known and not unlocked:
            notify = state.get("notified_at", 0.0) < now - NOTIFY_EVERY_S
            if notify:
                state["notified_at"] = now
                await self.ctx.storage.put(STATE, state)
            return {"allowed": False, "retry_after": max(1, math.ceil(state["until"] - now)), "notify": notify}
        state["failures"] += 1
        state["until"] = max(state["until"], now + self._delay_s(state["failures"]))
        await self.ctx.storage.put(STATE, state)
        await self.ctx.storage.set_alarm(int((now + FORGET_FAILURES_S) * 1000))
        return {"allowed": True, "retry_after": 0, "notify": False}

    async def succeeded(self, ip: str) -> None:
        """The right password: the count starts over, and this address is the owner's."""
        state = await self._state()
        known = dict(sorted(state["known"].items(), key=lambda item: item[1])[-(MAX_ADDRESSES - 1):])
        known[ip] = time.time()
        await self.ctx.storage.put(STATE, {"failures": 0, "until": 0.0, "known": known})

    async def alarm(self, info: Any = None) -> None:
        """A day without attempts: forget the failures (the owner's addresses stay, if any)."""
        state = await self._state()
        if state["known"]:
            await self.ctx.storage.put(STATE, {"failures": 0, "until": 0.0, "known": state["known"]})
        else:
            await self.ctx.storage.delete_all()
