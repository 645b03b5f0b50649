"""SignInState: one per OAuth `state` value, holding what the callback must match (the provider,
the nonce, the PKCE verifier) for ten minutes, and giving it out once.

`take` deletes before it answers and the input gate serializes calls, so of two callbacks with
the same state (a replay, a double submit) exactly one proceeds. An alarm forgets an attempt
nobody came back for.
"""
from __future__ import annotations

import time
from typing import Any

from durable import DurableObject

ATTEMPT = "attempt"


class SignInState(DurableObject):
    async def begin(self, provider: str, nonce: str, verifier: str, ttl_s: float, link: str | None = None) -> None:
        """`link`: the signed-in account this flow adds the provider to (None: a sign-in)."""
        expires = time.time() + ttl_s
        await self.ctx.storage.put(ATTEMPT, {"provider": provider, "nonce": nonce, "verifier": verifier,
                                             "expires": expires, "link": link})
        await self.ctx.storage.set_alarm(int(expires * 1000))

    async def take(self, provider: str) -> dict[str, Any] | None:
        """The attempt, once, if it is this provider's and still fresh; None otherwise."""
        attempt = await self.ctx.storage.get(ATTEMPT)
        if attempt is None:
            return None
        await self.ctx.storage.delete_all()
        if attempt["provider"] != provider or attempt["expires"] < time.time():
            return None
        return attempt

    async def alarm(self, info: Any = None) -> None:
        await self.ctx.storage.delete_all()
