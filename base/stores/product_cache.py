"""A process-local read cache for products and product listings.

Every product write in base (admin writes through `ProductStore`, stock through `ProductStock`)
invalidates here, so this process never serves a stale price or stock. A generation counter
keeps a read that raced a write from caching the old value; a short TTL bounds staleness from
writers outside this process (another instance, a manual fix in the database).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

TTL_S = 5.0
MAX_ENTRIES = 5000


class ProductCache:
    def __init__(self, ttl_s: float = TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.generation = 0
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Any, value: Any, generation: int) -> None:
        """Cache `value` only if no write happened since `generation` was read."""
        if generation != self.generation:
            return
        self._entries[key] = (time.monotonic() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """A product changed: listings may all differ, so drop everything."""
        self.generation += 1
        self._entries.clear()


_caches: dict[str, ProductCache] = {}


def cache_for(database_name: str) -> ProductCache:
    cache = _caches.get(database_name)
    if cache is None:
        cache = _caches[database_name] = ProductCache()
    return cache
