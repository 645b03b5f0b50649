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


class ShopperHolds(DurableObject):
    async def _live(self) -> dict[str, dict[str, Any]]:
        now_ms = time.time() * 1000
        live: dict[str, dict[str, Any]] = {}
        for key, claim in (await self.ctx.storage.list(prefix=CLAIM)).items():
            if claim["until_ms"] < now_ms:
                await self.ctx.storage.delete(key)
            else:
                live[key[len(CLAIM):]] = claim
        return live

    async def claim(self, order_id: str, units: int, until_ms: int, max_orders: int, max_units: int) -> dict[str, Any]:
        """Hold a place for `order_id` unless that would pass a cap; idempotent per order id."""
        live = await self._live()
        held_units = sum(c["units"] for c in live.values())
        if order_id in live:
            return {"ok": True, "orders": len(live), "units": held_units}
        if len(live) + 1 > max_orders or held_units + units > max_units:
            return {"ok": False, "orders": len(live), "units": held_units}
        await self.ctx.storage.put(CLAIM + order_id, {"units": units, "until_ms": until_ms})
        return {"ok": True, "orders": len(live) + 1, "units": held_units + units}

    async def release(self, order_id: str) -> None:
        await self.ctx.storage.delete(CLAIM + order_id)
