"""The edge cache for public catalogue reads: in memory, bounded in bytes (least recently used
goes first), fresh for `max_age`, served stale for `stale_while_revalidate` while one
background request refreshes it, and purged at once by a product write through the gateway.

Concurrent misses for one key share one upstream request. A purge bumps a generation, so a
response fetched before the purge is never stored after it (no stale price after a PATCH).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

log = logging.getLogger("rest_shop.gateway.cache")
CACHEABLE_PATH = re.compile(r"^/products(/[^/]+)?/?$")


@dataclass
class Stored:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    etag: str
    cacheable: bool = True  # false: shared with concurrent waiters, never stored
    stored_at: float = 0.0

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers) + 64


def cache_key(path: str, query: str) -> str:
    """Same resource, same key: query parameters in a canonical order."""
    params = sorted(parse_qsl(query, keep_blank_values=True))
    return path.rstrip("/") + ("?" + urlencode(params) if params else "")


def is_cacheable_request(method: str, path: str, headers: Mapping[str, str]) -> bool:
    """`headers` by lowercase name."""
    return (method == "GET" and CACHEABLE_PATH.match(path) is not None
            and not headers.get("authorization") and "no-cache" not in headers.get("cache-control", ""))


def is_catalogue_write(method: str, path: str) -> bool:
    return method not in ("GET", "HEAD", "OPTIONS") and (path == "/products" or path.startswith("/products/"))


def make_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {c.strip().removeprefix("W/") for c in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


@dataclass
class ResponseCache:
    max_bytes: int = 32 * 1024 * 1024
    max_age_s: float = 30.0
    stale_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    hits: int = 0
    misses: int = 0
    stale_hits: int = 0
    _entries: OrderedDict[str, Stored] = field(default_factory=OrderedDict)
    _bytes: int = 0
    _generation: int = 0
    _inflight: dict[str, asyncio.Future[Stored]] = field(default_factory=dict)
    _refreshing: set[asyncio.Task[Any]] = field(default_factory=set)

    async def fetch(self, key: str, load: Callable[[], Awaitable[Stored]]) -> tuple[Stored, str]:
        """(response, "HIT" | "STALE" | "MISS"); `load` asks the upstream (one call per key at a time)."""
        entry = self._entries.get(key)
        if entry is not None:
            age = self.clock() - entry.stored_at
            if age <= self.max_age_s:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry, "HIT"
            if age <= self.max_age_s + self.stale_s:
                self.stale_hits += 1
                if key not in self._inflight:
                    task = asyncio.get_running_loop().create_task(self._refresh(key, load))
                    self._refreshing.add(task)
                    task.add_done_callback(self._refreshing.discard)
                return entry, "STALE"
        self.misses += 1
        waiting = self._inflight.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting), "MISS"
        return await self._fill(key, load), "MISS"

    async def _fill(self, key: str, load: Callable[[], Awaitable[Stored]]) -> Stored:
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        generation = self._generation
        try:
            fresh = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else has to
            raise
        finally:
            self._inflight.pop(key, None)
        if fresh.cacheable and generation == self._generation:
            self._store(key, fresh)
        future.set_result(fresh)
        return fresh

    async def _refresh(self, key: str, load: Callable[[], Awaitable[Stored]]) -> None:
        try:
            await self._fill(key, load)
        except Exception as exc:  # the stale copy keeps being served until it expires
            log.warning("background refresh of %s failed: %s", key, exc)

    def _store(self, key: str, entry: Stored) -> None:
        if entry.size > self.max_bytes:
            return
        entry.stored_at = self.clock()
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[key] = entry
        self._bytes += entry.size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.size

    def purge(self, prefix: str = "") -> int:
        """Drop every entry under `prefix` and any fill started before now."""
        self._generation += 1
        doomed = [k for k in self._entries if k.startswith(prefix)]
        for key in doomed:
            self._bytes -= self._entries.pop(key).size
        return len(doomed)

    def age(self, entry: Stored) -> int:
        return max(0, int(self.clock() - entry.stored_at))

    def snapshot(self) -> dict[str, Any]:
        return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes,
                "hits": self.hits, "stale_hits": self.stale_hits, "misses": self.misses}

    async def close(self) -> None:
        for task in list(self._refreshing):
            task.cancel()
        await asyncio.gather(*self._refreshing, return_exceptions=True)
