"""ProductCache: a read that raced a write is never cached; invalidation drops everything."""
from __future__ import annotations

from base.stores.product_cache import ProductCache


def test_read_that_overlapped_a_write_is_not_cached() -> None:
    cache = ProductCache()
    generation = cache.generation  # a read starts
    cache.invalidate()             # a write lands meanwhile
    cache.put("k", "old value", generation)
    assert cache.get("k") is None


def test_put_get_invalidate_and_bound() -> None:
    cache = ProductCache(max_entries=2)
    cache.put("a", 1, cache.generation)
    cache.put("b", 2, cache.generation)
    cache.put("c", 3, cache.generation)
    assert cache.get("a") is None and cache.get("c") == 3
    cache.invalidate()
    assert cache.get("b") is None and cache.get("c") is None


def test_entries_expire() -> None:
    cache = ProductCache(ttl_s=-1)
    cache.put("a", 1, cache.generation)
    assert cache.get("a") is None
