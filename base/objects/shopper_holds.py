"""ShopperHolds: one per user, the unpaid orders (and units) that user holds stock with, so
one account cannot sit on a product's whole stock with orders it never pays.

A claim is taken before the order reserves stock and given back when the order is paid or
cancelled (an OrderLock step, so it survives a crash). Each claim also lapses by itself shortly
after the order's payment deadline, when the order's own alarm has cancelled it, so a claim
left behind by a crash never blocks the shopper for long.
"""
from __future__ import annotations

import time
from typing import Any

from durable import DurableObject

CLAIM = "claim:"
DELETE_BATCH = 128  # keys per storage.delete() call


class ShopperHolds(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        # the stored claims, read once per instance and kept in step with every write: a claim
        # then costs the same with 3 unpaid orders or 300 (no listing and decoding them all)
        self._claims: dict[str, dict[str, Any]] | None = None

    async def _live(self) -> dict[str, dict[str, Any]]:
        if self._claims is None:
            self._claims = {key[len(CLAIM):]: claim for key, claim in (await self.ctx.storage.list(prefix=CLAIM)).items()}
        now_ms = time.time() * 1000
        lapsed = [order_id for order_id, claim in self._claims.items() if claim["until_ms"] < now_ms]
        for start in range(0, len(lapsed), DELETE_BATCH):
            await self.ctx.storage.delete([CLAIM + order_id for order_id in lapsed[start:start + DELETE_BATCH]])
        for order_id in lapsed:
            del self._claims[order_id]
        return self._claims

    async def claim(self, order_id: str, units: int, until_ms: int, max_orders: int, max_units: int) -> dict[str, Any]:
        """Hold a place for `order_id` unless that would pass a cap; idempotent per order id."""
        live = await self._live()
        held_units = sum(c["units"] for c in live.values())
        if order_id in live:
            return {"ok": True, "orders": len(live), "units": held_units}
        if len(live) + 1 > max_orders or held_units + units > max_units:
            return {"ok": False, "orders": len(live), "units": held_units}
        claim = {"units": units, "until_ms": until_ms}
        await self.ctx.storage.put(CLAIM + order_id, claim)
        live[order_id] = claim
        return {"ok": True, "orders": len(live), "units": held_units + units}

    async def release(self, order_id: str) -> None:
        await self.ctx.storage.delete(CLAIM + order_id)
        if self._claims is not None:
            self._claims.pop(order_id, None)
