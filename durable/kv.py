"""KV namespaces (`kv_namespaces` in the config): Cloudflare's Workers KV API on a SQLite file
per namespace under the local state, so values survive restarts.

`get`/`put`/`delete`/`list`/`getWithMetadata` with Cloudflare's names and limits (keys up to 512
bytes, values up to 25 MiB, metadata up to 1024 bytes of JSON, `expirationTtl` at least 60 s),
snake_case spellings too, and JavaScript-style option objects (`put(k, v, {"expirationTtl": 60})`).
Unlike Cloudflare's, reads here are never stale: there is one copy, on this host; a cluster
refuses KV bindings (`Runtime`), as its nodes would not share it.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MIN_TTL_S = 60
MAX_LIST = 1000


class KVError(ValueError):
    """A key, value, option or cursor Cloudflare's KV would refuse."""


@dataclass(frozen=True)
class ValueWithMetadata:
    value: Any
    metadata: Any
    cacheStatus: Any = None

    def __getitem__(self, name: str) -> Any:  # dict-style access as well as attributes
        return getattr(self, name)


def _options(positional: dict[str, Any] | str | None, keywords: dict[str, Any]) -> dict[str, Any]:
    if isinstance(positional, str):  # get(key, "json"): the type as a string, as in JavaScript
        positional = {"type": positional}
    merged = {**(positional or {}), **keywords}
    aliases = {"expiration_ttl": "expirationTtl", "cache_ttl": "cacheTtl"}
    return {aliases.get(k, k): v for k, v in merged.items()}


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise KVError("KV keys are non-empty strings")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise KVError(f"KV keys are at most {MAX_KEY_BYTES} bytes")
    if key in (".", ".."):
        raise KVError("KV keys cannot be '.' or '..'")
    return key


class KVNamespace:
    """`env.MY_KV`: one namespace, one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                           "expiration INTEGER, metadata TEXT)")
        self._lock = asyncio.Lock()  # one statement at a time on the shared connection

    @classmethod
    def for_namespace(cls, state_dir: Path, namespace_id: str) -> KVNamespace:
        return cls(state_dir / "v3" / "kv" / (hashlib.sha256(namespace_id.encode()).hexdigest()[:32] + ".sqlite"))

    async def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._lock:
            return await asyncio.to_thread(lambda: self._conn.execute(sql, args).fetchall())

    async def _row(self, key: str) -> tuple[bytes, Any] | None:
        rows = await self._run("SELECT value, expiration, metadata FROM kv WHERE key = ?", (_check_key(key),))
        if not rows:
            return None
        value, expiration, metadata = rows[0]
        if expiration is not None and expiration <= time.time():
            return None
        return value, (json.loads(metadata) if metadata is not None else None)

    @staticmethod
    def _decode(value: bytes, kind: str) -> Any:
        if kind == "text":
            return value.decode()
        if kind == "json":
            return json.loads(value)
        if kind in ("arrayBuffer", "bytes", "stream"):
            return bytes(value)
        raise KVError(f"unknown type {kind!r}: text, json, arrayBuffer or stream")

    async def get(self, key: str, options: dict[str, Any] | str | None = None, **keywords: Any) -> Any:
        """The value (as `type`: text by default, json, arrayBuffer), or None."""
        kind = _options(options, keywords).get("type", "text")
        row = await self._row(key)
        return None if row is None else self._decode(row[0], kind)

    async def getWithMetadata(self, key: str, options: dict[str, Any] | str | None = None,
                              **keywords: Any) -> ValueWithMetadata:
        kind = _options(options, keywords).get("type", "text")
        row = await self._row(key)
        if row is None:
            return ValueWithMetadata(None, None)
        return ValueWithMetadata(self._decode(row[0], kind), row[1])

    get_with_metadata = getWithMetadata

    async def put(self, key: str, value: str | bytes | Any, options: dict[str, Any] | None = None,
                  **keywords: Any) -> None:
        opts = _options(options, keywords)
        data = value.encode() if isinstance(value, str) else value
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise KVError("KV values are strings or bytes (json.dumps other values)")
        data = bytes(data)
        if len(data) > MAX_VALUE_BYTES:
            raise KVError(f"KV values are at most {MAX_VALUE_BYTES} bytes")
        expiration = opts.get("expiration")
        if opts.get("expirationTtl") is not None:
            ttl = int(opts["expirationTtl"])
            if ttl < MIN_TTL_S:
                raise KVError(f"expirationTtl must be at least {MIN_TTL_S} seconds")
            expiration = int(time.time()) + ttl
        elif expiration is not None and int(expiration) < time.time() + MIN_TTL_S:
            raise KVError(f"expiration must be at least {MIN_TTL_S} seconds in the future")
        metadata = None
        if opts.get("metadata") is not None:
            metadata = json.dumps(opts["metadata"])
            if len(metadata.encode()) > MAX_METADATA_BYTES:
                raise KVError(f"KV metadata is at most {MAX_METADATA_BYTES} bytes of JSON")
        await self._run("INSERT OR REPLACE INTO kv (key, value, expiration, metadata) VALUES (?, ?, ?, ?)",
                        (_check_key(key), data, None if expiration is None else int(expiration), metadata))

    async def delete(self, key: str) -> None:
        await self._run("DELETE FROM kv WHERE key = ?", (_check_key(key),))

    async def list(self, options: dict[str, Any] | None = None, **keywords: Any) -> dict[str, Any]:
        """`{keys: [{name, expiration?, metadata?}], list_complete, cursor?}` in key order, by pages
        of `limit` (at most 1000); pass the `cursor` back for the next page."""
        opts = _options(options, keywords)
        prefix, limit = opts.get("prefix") or "", int(opts.get("limit") or MAX_LIST)
        if not 1 <= limit <= MAX_LIST:
            raise KVError(f"limit must be between 1 and {MAX_LIST}")
        after = ""
        if opts.get("cursor"):
            try:
                after = base64.urlsafe_b64decode(str(opts["cursor"]).encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise KVError("invalid cursor") from None
        rows = await self._run(
            "SELECT key, expiration, metadata FROM kv WHERE key > ? AND key >= ? AND key < ? "
            "AND (expiration IS NULL OR expiration > ?) ORDER BY key LIMIT ?",
            (after, prefix, prefix + "\U0010ffff", int(time.time()), limit + 1))
        page = rows[:limit]
        keys = []
        for name, expiration, metadata in page:
            entry: dict[str, Any] = {"name": name}
            if expiration is not None:
                entry["expiration"] = expiration
            if metadata is not None:
                entry["metadata"] = json.loads(metadata)
            keys.append(entry)
        complete = len(rows) <= limit
        result: dict[str, Any] = {"keys": keys, "list_complete": complete}
        if not complete:
            result["cursor"] = base64.urlsafe_b64encode(page[-1][0].encode()).decode()
        return result

    def close(self) -> None:
        self._conn.close()

    def __repr__(self) -> str:
        return f"<KVNamespace {self.path.name}>"
