"""MongoPool: a Durable Object that owns a worker's pymongo `AsyncMongoClient`.

One per service (`id_from_name("global")`), always hosted by the worker that uses it. Stores
take the pooled database with the local-only call `await stub.local("database")`; the pool's
lifecycle, health and statistics (from pymongo's monitoring listeners) stay inside the object.
Reads `env.MONGODB_URI` (a secret) and `env.MONGODB_DB` (a var).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import pymongo
from prometheus_client import Gauge
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.monitoring import ConnectionPoolListener, ServerHeartbeatListener

from .objects import DurableObject
from .observe.tail import redactor

log = logging.getLogger("durable.mongo_pool")

MONGODB_UP = Gauge("mongodb_up", "1 while the driver's monitor last reached the worker's MongoDB, 0 after a failed "
                   "check (every MONGODB_HEARTBEAT_MS)", ["worker"], multiprocess_mode="livemin")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PoolStats(ConnectionPoolListener, ServerHeartbeatListener):
    """Counts pool and heartbeat events; pymongo calls these from its own threads and tasks."""

    def __init__(self, worker: str = "") -> None:
        self.up = MONGODB_UP.labels(worker)  # for /metrics: the database-unavailable alert reads it
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
        self.up.set(1)

    def failed(self, event: Any) -> None:
        self.last_heartbeat, self.last_heartbeat_ok = _now_iso(), False
        self.up.set(0)
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


FIRST_CHECK_WAIT_S = 0.5  # a probe before the driver's first look at the server waits this long for it


class MongoPool(DurableObject):
    """Owns the client: made on first use, never waited on. The driver connects, monitors the
    server (every MONGODB_HEARTBEAT_MS) and reconnects by itself; the pool reports health from
    what that monitor last saw, and closes the client on shutdown."""

    node_local = True  # each node keeps its own client; stores reach it with stub.local()

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._stats = PoolStats(str(env.get("SERVICE_NAME", "")))
        self._max_pool = int(env.get("MONGODB_MAX_POOL_SIZE", 100))
        self._timeout_ms = int(env.get("MONGODB_TIMEOUT_MS", 5000))
        self._heartbeat_ms = max(500, int(env.get("MONGODB_HEARTBEAT_MS", 2000)))
        password = urlsplit(str(env.get("MONGODB_URI", ""))).password
        if password:
            redactor.add(password)

    async def _connected_client(self) -> AsyncMongoClient[dict[str, Any]]:
        """The client, its monitoring started (which does not wait for the server). Its tasks
        live as long as the process: they start in a context of their own, never in the request
        that happened to come first (its trace, its metrics meter)."""
        if self._client is None:
            self._client = AsyncMongoClient(
                self.env.MONGODB_URI, event_listeners=[self._stats], maxPoolSize=self._max_pool,
                serverSelectionTimeoutMS=self._timeout_ms, connectTimeoutMS=self._timeout_ms,
                socketTimeoutMS=self._timeout_ms * 2, heartbeatFrequencyMS=self._heartbeat_ms, tz_aware=True,
                appname=self.env.get("SERVICE_NAME"))
            self._connecting = asyncio.get_running_loop().create_task(self._client.aconnect(),
                                                                      context=contextvars.Context())
        connecting = self._connecting
        if connecting is not None:
            try:
                await asyncio.shield(connecting)
            finally:
                if connecting.done() and self._connecting is connecting:
                    self._connecting = None
        return self._client

    async def database(self) -> AsyncDatabase[dict[str, Any]]:
        """Local-only: the service's database on the pooled client. Never waits for the server: while
        it is away each operation fails within MONGODB_TIMEOUT_MS (a 503 for the request), and the
        driver reconnects by itself when it is back."""
        return (await self._connected_client())[str(self.env.MONGODB_DB)]

    async def known_down(self) -> bool:
        """Local-only: has the driver seen the server fail, with none writable since? A caller whose
        write can wait (a read model the alarm retries) answers at once instead of waiting out
        MONGODB_TIMEOUT_MS; the driver's monitor keeps checking and clears this when it is back."""
        if self._client is None:
            return False
        topology = self._client.topology_description
        return not topology.has_writable_server() and any(
            s.error for s in topology.server_descriptions().values())

    async def ping(self) -> dict[str, Any]:
        """Is the server there, as the driver's monitor last saw it: no round trip of our own, so a
        probe answers at once with the database up, down or unreachable. Only before the monitor's
        first check does it wait for one, FIRST_CHECK_WAIT_S at most."""
        client = await self._connected_client()
        servers = list(client.topology_description.server_descriptions().values())
        if not client.topology_description.has_writable_server() and not any(s.error for s in servers):
            try:  # the first check has not finished: give it a moment
                with pymongo.timeout(FIRST_CHECK_WAIT_S):
                    await client.admin.command("ping")
            except PyMongoError:
                pass
            servers = list(client.topology_description.server_descriptions().values())
        if client.topology_description.has_writable_server():
            rtts = [s.round_trip_time for s in servers if s.round_trip_time is not None]
            return {"status": "connected", "latency_ms": round(min(rtts) * 1000, 2) if rtts else None}
        errors = [str(s.error) for s in servers if s.error]
        error = redactor(errors[0] if errors else f"no server answered within {FIRST_CHECK_WAIT_S:g} s")[:500]
        self._stats.last_error = error
        return {"status": "disconnected", "latency_ms": None, "error": error}

    async def health(self) -> dict[str, Any]:
        result = await self.ping()
        result["pool"] = self._stats.snapshot(self._max_pool)
        return result

    async def on_shutdown(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class _Background:
    """The start-up work still retrying, and the signal that stops it between tries."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()


def retry_in_background(env: Any, what: str, work: Callable[[], Awaitable[None]], first_delay_s: float = 0.5,
                        max_delay_s: float = 30.0) -> None:
    """Run `work` (what start-up wants of the database: indexes) until it succeeds, backing off
    between tries, without holding up the start: a worker serves (and answers its probes) at
    once, whether or not its database is there yet. `stop_background(env)` ends it."""
    background: _Background = env.isolate_state("mongo.background", _Background)

    async def run() -> None:
        delay = first_delay_s
        while not background.stopping.is_set():
            try:
                await work()
                return
            except PyMongoError as exc:
                log.warning("%s: database not ready (%s); trying again in %.1f s", what, type(exc).__name__, delay)
            try:
                await asyncio.wait_for(background.stopping.wait(), delay)
            except asyncio.TimeoutError:
                delay = min(max_delay_s, delay * 2)
    task = asyncio.get_running_loop().create_task(run())
    background.tasks.add(task)
    task.add_done_callback(background.tasks.discard)


async def prepare(env: Any, what: str, work: Callable[[], Awaitable[None]], binding: str = "MONGO_POOL") -> None:
    """Start-up's database work: done now when the database answers (the usual start: the worker
    then serves with it done), else retried in the background (`retry_in_background`). Asking
    costs at most the pool's first look at the server (FIRST_CHECK_WAIT_S)."""
    pool = getattr(env, binding)
    if (await pool.get(pool.id_from_name("global")).ping())["status"] == "connected":
        try:
            await work()
            return
        except PyMongoError as exc:
            log.warning("%s: %s; trying again in the background", what, type(exc).__name__)
    retry_in_background(env, what, work)


async def stop_background(env: Any, timeout_s: float = 10.0) -> None:
    """Stop between tries; a try under way is let finish (at most `timeout_s`): a command cut off
    here would go on in the server after we left, racing whatever comes next (a drop, a restart)."""
    background: _Background = env.isolate_state("mongo.background", _Background)
    background.stopping.set()
    if background.tasks:
        _, late = await asyncio.wait(list(background.tasks), timeout=timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


def _pool(env: Any, binding: str) -> Any:
    """The worker's MongoPool object (`id_from_name("global")`), reached with local-only calls."""
    return getattr(env, binding).get_by_name("global")


async def pooled_database(env: Any, binding: str = "MONGO_POOL") -> AsyncDatabase[dict[str, Any]]:
    """The worker's database from its MongoPool object."""
    return await _pool(env, binding).local("database")


async def database_known_down(env: Any, binding: str = "MONGO_POOL") -> bool:
    """Whether the worker's MongoPool has seen its server fail and not come back (no round trip)."""
    return bool(await _pool(env, binding).local("known_down"))
