"""VariantBudget: one per source image, how many new variants it has been given today (UTC).
Cached variants cost nothing; a new width, quality or format beyond the day's budget is refused,
so a script asking for 1,000 widths of one photo makes at most the budget's worth of work and
storage, on whichever node it asks."""
from __future__ import annotations

from typing import Any

from durable import DurableObject


class VariantBudget(DurableObject):
    async def take(self, day: str, budget: int) -> bool:
        """One more new variant today, if the budget allows."""
        spent = await self.ctx.storage.get("spent") or {}
        used = int(spent.get(day, 0))
        if used >= budget:
            return False
        await self.ctx.storage.put("spent", {day: used + 1})  # earlier days are forgotten
        return True

    async def left(self, day: str, budget: int) -> int:
        spent: dict[str, Any] = await self.ctx.storage.get("spent") or {}
        return max(budget - int(spent.get(day, 0)), 0)
