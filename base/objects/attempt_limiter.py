"""AttemptLimiter: attempts at an account action (signup, login, reset, resend) per client or
account, a window each, exact under concurrency.

Each hit is a storage-only read-modify-write, so the input gate makes it atomic with no lock.
The state deletes itself (alarm) once the bucket would be full again.
"""
from __future__ import annotations

import math
import time
from typing import Any

from durable import DurableObject


class AttemptLimiter(DurableObject):
    async def hit(self, limit: int, window_s: float) -> dict[str, Any]:
        """Take one token; `allowed`, `remaining`, and `retry_after` seconds when refused."""
        now = time.time()
        rate = limit / window_s
        bucket = await self.ctx.storage.get("bucket") or {"tokens": float(limit), "at": now}
        tokens = min(float(limit), bucket["tokens"] + (now - bucket["at"]) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        await self.ctx.storage.put("bucket", {"tokens": tokens, "at": now})
        full_at = now + (limit - tokens) / rate
        await self.ctx.storage.set_alarm(int(full_at * 1000) + 1000)
        return {"allowed": allowed, "limit": limit, "remaining": int(tokens),
                "retry_after": 0 if allowed else max(1, math.ceil((1.0 - tokens) / rate)),
                "reset": max(0, math.ceil(full_at - now))}

    async def alarm(self, info: Any = None) -> None:
        await self.ctx.storage.delete_all()
