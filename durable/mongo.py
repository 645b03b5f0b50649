"""MongoPool: a Durable Object that owns a worker's pymongo `AsyncMongoClient`.

One per service (`id_from_name("global")`), always hosted by the worker that uses it. Stores
take the pooled database with the local-only call `await stub.local("database")`; the pool's
lifecycle, health and statistics (from pymongo's monitoring listeners) stay inside the object.
Reads `env.MONGODB_URI` (a secret) and `env.MONGODB_DB` (a var).
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.monitoring import ConnectionPoolListener, ServerHeartbeatListener

from .objects import DurableObject
from .observe.tail import redactor

log = logging.getLogger("durable.mongo")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PoolStats(ConnectionPoolListener, ServerHeartbeatListener):
    """Counts pool and heartbeat events; pymongo calls these from its own threads and tasks."""

    def __init__(self) -> None:
        self.total = 0
        self.in_use = 0
        self.checkouts = 0
        self.checkout_failures = 0
        self.wait_ms_total = 0.0
        self.wait_ms_max = 0.0
        self.pool_clears = 0
        self.last_heartbeat: str | None = None
        self.last_heartbeat_ok: bool | None = None
        self.last_error: str | None = None

    # pool events
    def pool_created(self, event: Any) -> None: ...
    def pool_ready(self, event: Any) -> None: ...
    def pool_closed(self, event: Any) -> None: ...
    def connection_ready(self, event: Any) -> None: ...
    def connection_check_out_started(self, event: Any) -> None: ...

    def pool_cleared(self, event: Any) -> None:
        self.pool_clears += 1

    def connection_created(self, event: Any) -> None:
        self.total += 1

    def connection_closed(self, event: Any) -> None:
        self.total = max(0, self.total - 1)

    def connection_checked_out(self, event: Any) -> None:
        self.in_use += 1
        self.checkouts += 1
        wait_ms = float(getattr(event, "duration", 0.0) or 0.0) * 1000
        self.wait_ms_total += wait_ms
        self.wait_ms_max = max(self.wait_ms_max, wait_ms)

    def connection_checked_in(self, event: Any) -> None:
        self.in_use = max(0, self.in_use - 1)

    def connection_check_out_failed(self, event: Any) -> None:
        self.checkout_failures += 1
        self.last_error = f"checkout failed: {event.reason}"

    # heartbeat events
    def started(self, event: Any) -> None: ...

    def succeeded(self, event: Any) -> None:
        self.last_heartbeat, self.last_heartbeat_ok = _now_iso(), True

    def failed(self, event: Any) -> None:
        self.last_heartbeat, self.last_heartbeat_ok = _now_iso(), False
        self.last_error = redactor(f"{type(event.reply).__name__}: {event.reply}")

    def snapshot(self, max_pool_size: int) -> dict[str, Any]:
        return {
            "connections": {"total": self.total, "in_use": self.in_use,
                            "available": max(0, self.total - self.in_use), "max": max_pool_size},
            "checkouts": self.checkouts, "checkout_failures": self.checkout_failures,
            "wait_ms": {"avg": round(self.wait_ms_total / self.checkouts, 3) if self.checkouts else 0.0,
                        "max": round(self.wait_ms_max, 3)},
            "pool_clears": self.pool_clears,
            "last_heartbeat": self.last_heartbeat, "last_heartbeat_ok": self.last_heartbeat_ok,
            "last_error": self.last_error,
        }


class MongoPool(DurableObject):
    """Connects lazily, retries with exponential backoff, reports health, closes on shutdown."""

    node_local = True  # each node keeps its own client; stores reach it with stub.local()

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._stats = PoolStats()
        self._connected = False
        self._lock = asyncio.Lock()
        self._max_pool = int(env.get("MONGODB_MAX_POOL_SIZE", 100))
        self._timeout_ms = int(env.get("MONGODB_TIMEOUT_MS", 5000))
        password = urlsplit(str(env.get("MONGODB_URI", ""))).password
        if password:
            redactor.add(password)

    def _make_client(self) -> AsyncMongoClient[dict[str, Any]]:
        return AsyncMongoClient(
            self.env.MONGODB_URI, event_listeners=[self._stats], maxPoolSize=self._max_pool,
            serverSelectionTimeoutMS=self._timeout_ms, connectTimeoutMS=self._timeout_ms,
            socketTimeoutMS=self._timeout_ms * 2, tz_aware=True, appname=self.env.get("SERVICE_NAME"))

    async def _connect(self, attempts: int = 5, first_delay_s: float = 0.1) -> None:
        async with self._lock:
            if self._client is None:
                self._client = self._make_client()
            delay = first_delay_s
            for attempt in range(1, attempts + 1):
                try:
                    await self._client.admin.command("ping")
                    self._connected = True
                    return
                except PyMongoError as exc:
                    self._stats.last_error = redactor(f"{type(exc).__name__}: {exc}")[:500]
                    if attempt == attempts:
                        log.error("MongoDB unreachable after %d attempts: %s", attempts, self._stats.last_error)
                        return
                    await asyncio.sleep(delay)
                    delay *= 2

    async def database(self) -> AsyncDatabase[dict[str, Any]]:
        """Local-only: the service's database on the pooled client. The first call connects (with
        retries); after that the driver reconnects by itself, and while the server is away each
        operation fails within MONGODB_TIMEOUT_MS instead of a request waiting on retries here."""
        if self._client is None:
            await self._connect()
        assert self._client is not None
        return self._client[str(self.env.MONGODB_DB)]

    async def ping(self) -> dict[str, Any]:
        """Round-trip to the server: status and latency, or the error."""
        if self._client is None:
            self._client = self._make_client()
        start = time.perf_counter()
        try:
            await self._client.admin.command("ping")
        except PyMongoError as exc:
            self._connected = False
            self._stats.last_error = redactor(f"{type(exc).__name__}: {exc}")[:500]
            return {"status": "disconnected", "latency_ms": None, "error": self._stats.last_error}
        self._connected = True
        return {"status": "connected", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    async def health(self) -> dict[str, Any]:
        result = await self.ping()
        result["pool"] = self._stats.snapshot(self._max_pool)
        return result

    async def on_shutdown(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


async def pooled_database(env: Any, binding: str = "MONGO_POOL") -> AsyncDatabase[dict[str, Any]]:
    """The worker's database from its MongoPool object (`id_from_name("global")`, local-only call)."""
    pool = getattr(env, binding)
    return await pool.get(pool.id_from_name("global")).local("database")
