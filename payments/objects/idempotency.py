"""PaymentIdempotency: one Durable Object per (user, Idempotency-Key), as Stripe's and the IETF
draft's semantics ask: first request runs, its final response is replayed byte for byte, a
different body is a mismatch, a concurrent retry is told to wait.

A record left in flight by a process that died (another BOOT_ID) is taken over by the next
retry; the provider call it repeats carries the same provider idempotency key, so nothing is
charged twice. Records expire by alarm (IDEMPOTENCY_TTL_S, 24 h by default).
"""
from __future__ import annotations

import secrets
import time
from typing import Any

from durable import DurableObject

BOOT_ID = secrets.token_hex(8)  # this process; a record in flight under another one is orphaned


class PaymentIdempotency(DurableObject):
    def ledger(self) -> Any:
        ns = self.env.IDEMPOTENCY_LEDGER
        return ns.get(ns.id_from_name("global"))

    async def begin(self, fingerprint: str) -> dict[str, Any]:
        """`proceed` (we run it), `replay` (+ response), `mismatch` or `in_progress`."""
        record = await self.ctx.storage.get("record")
        if record is None:
            started = time.time()
            await self.ctx.storage.put("record", {"state": "in_flight", "fingerprint": fingerprint,
                                                  "boot": BOOT_ID, "started": started})
            ttl = float(self.env.get("IDEMPOTENCY_TTL_S", 86400))
            await self.ctx.storage.set_alarm(int((started + ttl) * 1000))
            await self.ledger().opened(self.ctx.id.to_string(), started)
            return {"outcome": "proceed", "recovered": False}
        if record["fingerprint"] != fingerprint:
            return {"outcome": "mismatch"}
        if record["state"] == "done":
            return {"outcome": "replay", "response": record["response"]}
        if record["boot"] != BOOT_ID:
            record["boot"] = BOOT_ID
            await self.ctx.storage.put("record", record)
            return {"outcome": "proceed", "recovered": True}
        return {"outcome": "in_progress"}

    async def finish(self, response: dict[str, Any]) -> None:
        """Record the final response (status, headers, exact body bytes) for replays."""
        record = await self.ctx.storage.get("record")
        if record is not None:
            record.update(state="done", response=response, finished=time.time())
            await self.ctx.storage.put("record", record)
            await self.ledger().settled(self.ctx.id.to_string())

    async def release(self) -> None:
        """Not recorded (validation failure, retryable error): a later request may run afresh."""
        await self.ctx.storage.delete_all()
        await self.ledger().dropped(self.ctx.id.to_string())

    async def alarm(self, info: Any = None) -> None:
        await self.ctx.storage.delete_all()
        await self.ledger().dropped(self.ctx.id.to_string())


class IdempotencyLedger(DurableObject):
    """One per service: which idempotency records exist and which are in flight, for /health.

    Records live one per object and cannot be listed, so each reports its transitions here."""

    async def opened(self, record: str, started: float) -> None:
        fresh = await self.ctx.storage.get(f"held:{record}") is None
        count = int(await self.ctx.storage.get("count") or 0) + fresh
        await self.ctx.storage.put({f"held:{record}": 1, f"inflight:{record}": started, "count": count})

    async def settled(self, record: str) -> None:
        await self.ctx.storage.delete(f"inflight:{record}")

    async def dropped(self, record: str) -> None:
        await self.ctx.storage.delete(f"inflight:{record}")
        if await self.ctx.storage.delete(f"held:{record}"):
            await self.ctx.storage.put("count", max(0, int(await self.ctx.storage.get("count") or 0) - 1))

    async def stats(self) -> dict[str, Any]:
        """Records held, and how long the oldest unfinished one has been running (a stuck charge)."""
        inflight = await self.ctx.storage.list(prefix="inflight:")
        oldest = min(inflight.values(), default=None)
        return {"records": int(await self.ctx.storage.get("count") or 0), "in_flight": len(inflight),
                "oldest_in_flight_s": None if oldest is None else round(time.time() - oldest, 3)}


class ProviderEvents(DurableObject):
    """One per provider: which webhook/callback event ids were applied (kept for 7 days).

    A delivery claims its event before applying it, so two concurrent deliveries of one event
    never both apply it; a claim whose holder died lapses after `claim_s` so a redelivery can."""

    async def claim(self, event_id: str, claim_s: float = 30.0) -> str:
        """"new" (the caller applies it, then calls `done`), "duplicate", or "busy"."""
        key = f"evt:{event_id}"
        held = await self.ctx.storage.get(key)
        now = time.time()
        if isinstance(held, (int, float)):
            return "duplicate"
        if isinstance(held, dict) and held.get("until", 0) > now:
            return "busy"
        await self.ctx.storage.put(key, {"until": now + claim_s})
        return "new"

    async def done(self, event_id: str) -> None:
        await self.ctx.storage.put(f"evt:{event_id}", time.time())
        if await self.ctx.storage.get_alarm() is None:
            await self.ctx.storage.set_alarm(int((time.time() + 86400) * 1000))

    async def release(self, event_id: str) -> None:
        """Applying failed: let the provider's redelivery try again at once."""
        await self.ctx.storage.delete(f"evt:{event_id}")

    async def alarm(self, info: Any = None) -> None:
        cutoff = time.time() - 7 * 86400
        old = [k for k, at in (await self.ctx.storage.list(prefix="evt:")).items()
               if (at if isinstance(at, (int, float)) else at.get("until", 0)) < cutoff]
        for start in range(0, len(old), 128):
            await self.ctx.storage.delete(old[start:start + 128])
        await self.ctx.storage.set_alarm(int((time.time() + 86400) * 1000))
