"""RateLimiter: one Durable Object per (service, route class, client) holding a token bucket.

Calls to one object are serialized by its input gate and `take` never awaits anything but
storage, so N concurrent requests against a bucket of L let exactly L through. The gateway may
take several tokens at once as an allowance (`gateway/allowances.py`) and give back what it did not
spend; every token still comes out of this bucket.

The bucket lives in memory and is saved at most once per `SAVE_EVERY_S` (without holding the
reply for the disk): a commit per request would cost more than the limit protects, and a
crash or eviction forgives at most that last second of spending.
"""
from __future__ import annotations

import math
import time
from typing import Any

from durable import DurableObject

SAVE_EVERY_S = 1.0


class RateLimiter(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._bucket: dict[str, float] | None = None
        self._saved_at = 0.0

    async def take(self, limit: int, period_s: float, want: int = 1, returning: int = 0) -> dict[str, Any]:
        """Up to `want` tokens, after `returning` unspent ones are put back (`granted` says how
        many; none when the bucket holds less than one, and then `next_token_s` says for how
        long it will). `reset` is the seconds until the bucket is full again; `remaining` is
        what it holds after this grant."""
        now = time.time()
        bucket = self._bucket or await self.ctx.storage.get("bucket") or {"tokens": float(limit), "at": now}
        rate = limit / period_s
        tokens = min(float(limit), bucket["tokens"] + max(0.0, now - bucket["at"]) * rate + max(0, returning))
        granted = min(max(1, want), int(tokens))
        tokens -= granted
        self._bucket = {"tokens": tokens, "at": now}
        if now - self._saved_at >= SAVE_EVERY_S:
            self._saved_at = now
            await self.ctx.storage.put("bucket", self._bucket, allow_unconfirmed=True)
        return {"granted": granted, "remaining": int(tokens), "reset": math.ceil((limit - tokens) / rate),
                "next_token_s": 0.0 if granted else (1.0 - tokens) / rate}
