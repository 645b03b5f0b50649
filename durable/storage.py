"""Transactional storage for Durable Objects on SQLite.

One database per namespace (`kv(object_id, key, value)` and `alarms(object_id, scheduled_ms)`,
WAL mode): millions of small objects (one per idempotency key, say) stay one file, and one
writer thread group-commits the writes of every object in the namespace. Writes land in memory
at once and are committed atomically in the background; `flush(seq)` is the output gate the
runtime awaits before releasing a response. Reads never leave the event loop: the object's
cache, then the uncommitted layers, then a point read on a reader connection (microseconds).
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import codec
from .gates import InputGate

MAX_KEY_BYTES = 2048
MAX_VALUE_BYTES = 2 * 1024 * 1024
MAX_KEYS_PER_CALL = 128
CACHE_ENTRIES = 10_000

_UNSET: Any = object()
_MISSING: Any = object()

Layer = dict[str, "bytes | None"]


@dataclass(slots=True)
class ObjectBatch:
    """Uncommitted changes of one object: an optional wipe, then writes (None = delete)."""

    clear: bool = False
    writes: Layer = field(default_factory=dict)
    alarm: Any = _UNSET  # int ms, None to delete, _UNSET when untouched


@dataclass(frozen=True, slots=True)
class KeyRange:
    lo: str | None = None
    lo_inclusive: bool = True
    hi: str | None = None  # exclusive

    def __contains__(self, key: str) -> bool:
        if self.lo is not None and (key < self.lo or (key == self.lo and not self.lo_inclusive)):
            return False
        return self.hi is None or key < self.hi


def _prefix_end(prefix: str) -> str | None:
    """Smallest string greater than every string starting with `prefix` (code-point order)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000  # skip surrogates: not encodable in UTF-8 keys
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def key_range(prefix: str | None = None, start: str | None = None,
              start_after: str | None = None, end: str | None = None) -> KeyRange:
    if start is not None and start_after is not None:
        raise ValueError("list() takes start or start_after, not both")
    lo, inclusive = (start, True) if start_after is None else (start_after, False)
    hi = end
    if prefix:
        if lo is None or lo < prefix:
            lo, inclusive = prefix, True
        pend = _prefix_end(prefix)
        if pend is not None and (hi is None or pend < hi):
            hi = pend
    return KeyRange(lo, inclusive, hi)


def merge_listing(base: list[tuple[str, bytes]], layers: Iterable[ObjectBatch | None],
                  rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
    """Apply uncommitted layers (oldest first) over a committed listing, in key order."""
    merged = dict(base)
    for layer in layers:
        if layer is None:
            continue
        if layer.clear:
            merged.clear()
        for k, v in layer.writes.items():
            if k not in rng:
                continue
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
    items = sorted(merged.items(), reverse=reverse)
    return items if limit is None else items[:limit]


class StorageEngine:
    """The SQLite database of one namespace, with a single group-committing writer thread."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._wconn.execute("PRAGMA journal_mode=WAL")
        self._wconn.execute(f"PRAGMA synchronous={synchronous}")
        self._wconn.executescript(
            """
            CREATE TABLE IF NOT EXISTS kv (
                object_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY (object_id, key)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS alarms (
                object_id TEXT PRIMARY KEY, scheduled_ms INTEGER NOT NULL) WITHOUT ROWID;
            """
        )
        self._rconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._rconn.execute("PRAGMA query_only=1")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"do-writer-{self.path.parent.name}")
        self._pending: dict[str, ObjectBatch] = {}
        self._inflight: dict[str, ObjectBatch] = {}
        self._seq = 0
        self._committed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.on_commit_failure: Callable[[set[str]], None] | None = None
        self.commits = 0  # statistics: how many SQLite transactions the writer ran
        self.closed = False

    # -- writes -------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """Sequence number of the newest staged write; `flush(seq)` waits until it is durable."""
        return self._seq

    def stage(self, object_id: str) -> ObjectBatch:
        if self.closed:
            raise RuntimeError(f"storage {self.path} is closed")
        batch = self._pending.get(object_id)
        if batch is None:
            batch = self._pending[object_id] = ObjectBatch()
        self._seq += 1
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return batch

    async def flush(self, seq: int | None = None) -> None:
        target = self._seq if seq is None else seq
        if self._committed >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                target = self._seq
                self._inflight = batch
                error: BaseException | None = None
                try:
                    await loop.run_in_executor(self._executor, self._commit, batch)
                    self.commits += 1
                except Exception as exc:  # disk full, I/O error: tell waiters, drop caches
                    error = exc
                self._inflight = {}
                self._committed = target
                self._settle(target, error)
                if error is not None and self.on_commit_failure is not None:
                    self.on_commit_failure(set(batch))
        finally:
            self._writer = None
        self._settle(self._committed, None)

    def _settle(self, upto: int, error: BaseException | None) -> None:
        remaining = []
        for seq, fut in self._waiters:
            if seq <= upto:
                if not fut.done():
                    if error is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(error)
            else:
                remaining.append((seq, fut))
        self._waiters = remaining

    def _commit(self, batch: dict[str, ObjectBatch]) -> None:
        conn = self._wconn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for object_id, ob in batch.items():
                if ob.clear:
                    conn.execute("DELETE FROM kv WHERE object_id = ?", (object_id,))
                deletes = [(object_id, k) for k, v in ob.writes.items() if v is None]
                puts = [(object_id, k, v) for k, v in ob.writes.items() if v is not None]
                if deletes:
                    conn.executemany("DELETE FROM kv WHERE object_id = ? AND key = ?", deletes)
                if puts:
                    conn.executemany("INSERT OR REPLACE INTO kv (object_id, key, value) VALUES (?, ?, ?)", puts)
                if ob.alarm is None:
                    conn.execute("DELETE FROM alarms WHERE object_id = ?", (object_id,))
                elif ob.alarm is not _UNSET:
                    conn.execute("INSERT OR REPLACE INTO alarms (object_id, scheduled_ms) VALUES (?, ?)",
                                 (object_id, ob.alarm))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- reads --------------------------------------------------------------------------
    def _layers(self, object_id: str) -> tuple[ObjectBatch | None, ObjectBatch | None]:
        """(in flight, pending) changes of one object: oldest first."""
        return self._inflight.get(object_id), self._pending.get(object_id)

    def read(self, object_id: str, key: str) -> bytes | None:
        for layer in reversed(self._layers(object_id)):
            if layer is not None:
                if key in layer.writes:
                    return layer.writes[key]
                if layer.clear:
                    return None
        row = self._rconn.execute(
            "SELECT value FROM kv WHERE object_id = ? AND key = ?", (object_id, key)).fetchone()
        return row[0] if row else None

    def list(self, object_id: str, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
        layers = self._layers(object_id)
        committed_visible = not any(layer is not None and layer.clear for layer in layers)
        base: list[tuple[str, bytes]] = []
        if committed_visible:
            overlay_size = sum(len(layer.writes) for layer in layers if layer is not None)
            base = self._select(object_id, rng, reverse, None if limit is None else limit + overlay_size)
        return merge_listing(base, layers, rng, reverse, limit)

    def _select(self, object_id: str, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
        sql = ["SELECT key, value FROM kv WHERE object_id = ?"]
        args: list[Any] = [object_id]
        if rng.lo is not None:
            sql.append("AND key >= ?" if rng.lo_inclusive else "AND key > ?")
            args.append(rng.lo)
        if rng.hi is not None:
            sql.append("AND key < ?")
            args.append(rng.hi)
        sql.append("ORDER BY key DESC" if reverse else "ORDER BY key")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(limit)
        return self._rconn.execute(" ".join(sql), args).fetchall()

    def read_alarm(self, object_id: str) -> int | None:
        for layer in reversed(self._layers(object_id)):
            if layer is not None and layer.alarm is not _UNSET:
                return layer.alarm
        row = self._rconn.execute("SELECT scheduled_ms FROM alarms WHERE object_id = ?", (object_id,)).fetchone()
        return row[0] if row else None

    def all_alarms(self) -> list[tuple[str, int]]:
        return self._rconn.execute("SELECT object_id, scheduled_ms FROM alarms").fetchall()

    def object_count(self) -> int:
        return self._rconn.execute("SELECT COUNT(DISTINCT object_id) FROM kv").fetchone()[0]

    async def close(self) -> None:
        if self.closed:
            return
        await self.flush()
        self.closed = True
        self._executor.shutdown(wait=True)
        self._rconn.close()
        self._wconn.close()


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"storage keys are str, got {type(key).__name__}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"storage key is longer than {MAX_KEY_BYTES} bytes")
    return key


def _check_many(keys: Iterable[Any]) -> list[str]:
    keys = [_check_key(k) for k in keys]
    if len(keys) > MAX_KEYS_PER_CALL:
        raise ValueError(f"at most {MAX_KEYS_PER_CALL} keys per call, got {len(keys)}")
    return keys


def _encode_value(key: str, value: Any) -> bytes:
    data = codec.encode(value, what=f"value for storage key {key!r}")
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"value for storage key {key!r} is {len(data)} bytes; the limit is {MAX_VALUE_BYTES}")
    return data


def to_epoch_ms(when: int | float | datetime) -> int:
    if isinstance(when, datetime):
        return int(when.timestamp() * 1000)
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return int(when)
    raise TypeError(f"set_alarm() takes epoch milliseconds or a datetime, got {type(when).__name__}")


class DurableObjectStorage:
    """`ctx.storage`: the key-value and alarm API of one object (Cloudflare's DurableObjectStorage)."""

    def __init__(self, engine: StorageEngine, object_id: str, gate: InputGate | None = None,
                 on_alarm_change: Callable[[int | None], None] | None = None) -> None:
        self._engine = engine
        self._object_id = object_id
        self._gate = gate or InputGate()
        self._on_alarm_change = on_alarm_change
        self._cache: dict[str, bytes | None] = {}
        self.last_seq = 0  # engine sequence of this object's newest write: its output gate

    def _stage(self) -> ObjectBatch:
        batch = self._engine.stage(self._object_id)
        self.last_seq = self._engine.seq
        return batch

    # -- internal, synchronous ------------------------------------------------------------
    def _read(self, key: str) -> bytes | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        data = self._engine.read(self._object_id, key)
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()  # uncommitted writes stay readable through the engine's layers
        self._cache[key] = data
        return data

    def _write(self, key: str, data: bytes | None) -> None:
        self._stage().writes[key] = data
        self._cache[key] = data

    def _list_raw(self, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
        return self._engine.list(self._object_id, rng, reverse, limit)

    def _clear(self) -> None:
        batch = self._stage()
        batch.clear = True
        batch.writes.clear()
        self._cache.clear()

    def _set_alarm_ms(self, ms: int | None) -> None:
        if self._on_alarm_change is not None:
            self._on_alarm_change(ms)  # may refuse (class without alarm()) before anything is staged
        self._stage().alarm = ms

    def invalidate(self) -> None:
        """Forget cached values (after a failed commit the cache may hold what never landed)."""
        self._cache.clear()

    # -- public API -----------------------------------------------------------------------
    async def get(self, key: str | Iterable[str]) -> Any:
        """One key → its value or None; a list of keys → dict of the keys that exist."""
        if isinstance(key, str):
            data = self._read(_check_key(key))
            return None if data is None else codec.decode(data)
        found: dict[str, Any] = {}
        for k in _check_many(key):
            data = self._read(k)
            if data is not None:
                found[k] = codec.decode(data)
        return found

    async def put(self, key: str | Mapping[str, Any], value: Any = _MISSING, *,
                  allow_unconfirmed: bool = False) -> None:
        """`allow_unconfirmed` (Cloudflare's allowUnconfirmed): replies need not wait for this
        write to be durable — for state whose loss in a crash is harmless (rate-limit buckets)."""
        gate = self.last_seq
        if isinstance(key, Mapping):
            if value is not _MISSING:
                raise TypeError("put(entries) takes no separate value")
            keys = _check_many(key.keys())
            encoded = [(k, _encode_value(k, key[k])) for k in keys]  # all or nothing
            for k, data in encoded:
                self._write(k, data)
        else:
            if value is _MISSING:
                raise TypeError("put(key, value) needs a value")
            k = _check_key(key)
            self._write(k, _encode_value(k, value))
        if allow_unconfirmed:
            self.last_seq = gate

    async def delete(self, key: str | Iterable[str]) -> bool | int:
        """One key → whether it existed; a list → how many existed."""
        if isinstance(key, str):
            k = _check_key(key)
            existed = self._read(k) is not None
            self._write(k, None)
            return existed
        count = 0
        for k in _check_many(key):
            count += self._read(k) is not None
            self._write(k, None)
        return count

    async def list(self, *, prefix: str | None = None, start: str | None = None,
                   start_after: str | None = None, end: str | None = None,
                   limit: int | None = None, reverse: bool = False) -> dict[str, Any]:
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError("list(limit=) must be a positive int")
        rng = key_range(prefix, start, start_after, end)
        return {k: codec.decode(v) for k, v in self._list_raw(rng, reverse, limit)}

    async def delete_all(self) -> None:
        """Delete every key and the alarm (as with compatibility dates from 2026)."""
        self._clear()
        self._set_alarm_ms(None)

    async def transaction(self, closure: Callable[[Transaction], Awaitable[Any]]) -> Any:
        """Run `closure(txn)` with the object to itself; its writes land all together or not at all."""
        async with self._gate.exclusive():
            txn = Transaction(self)
            result = await closure(txn)
            if not txn.rolled_back:
                txn._apply()
            return result

    async def sync(self) -> None:
        """Wait until every write this object made so far is durable."""
        await self._engine.flush(self.last_seq)

    async def get_alarm(self) -> int | None:
        return self._engine.read_alarm(self._object_id)

    async def set_alarm(self, scheduled_time: int | float | datetime) -> None:
        self._set_alarm_ms(to_epoch_ms(scheduled_time))

    async def delete_alarm(self) -> None:
        self._set_alarm_ms(None)


class Transaction:
    """The view a `transaction()` closure works on: reads see its own writes; `rollback()` discards."""

    def __init__(self, storage: DurableObjectStorage) -> None:
        self._storage = storage
        self._batch = ObjectBatch()
        self.rolled_back = False

    def _read(self, key: str) -> bytes | None:
        if key in self._batch.writes:
            return self._batch.writes[key]
        return None if self._batch.clear else self._storage._read(key)

    async def get(self, key: str | Iterable[str]) -> Any:
        if isinstance(key, str):
            data = self._read(_check_key(key))
            return None if data is None else codec.decode(data)
        return {k: codec.decode(d) for k in _check_many(key) if (d := self._read(k)) is not None}

    async def put(self, key: str | Mapping[str, Any], value: Any = _MISSING) -> None:
        entries = key if isinstance(key, Mapping) else {key: value}
        if value is _MISSING and not isinstance(key, Mapping):
            raise TypeError("put(key, value) needs a value")
        encoded = [(k, _encode_value(k, entries[k])) for k in _check_many(entries.keys())]
        for k, data in encoded:
            self._batch.writes[k] = data

    async def delete(self, key: str | Iterable[str]) -> bool | int:
        keys = [_check_key(key)] if isinstance(key, str) else _check_many(key)
        count = 0
        for k in keys:
            count += self._read(k) is not None
            self._batch.writes[k] = None
        return bool(count) if isinstance(key, str) else count

    async def list(self, *, prefix: str | None = None, start: str | None = None,
                   start_after: str | None = None, end: str | None = None,
                   limit: int | None = None, reverse: bool = False) -> dict[str, Any]:
        rng = key_range(prefix, start, start_after, end)
        base: list[tuple[str, bytes]] = []
        if not self._batch.clear:
            base = self._storage._list_raw(rng, reverse, None if limit is None else limit + len(self._batch.writes))
        return {k: codec.decode(v) for k, v in merge_listing(base, [self._batch], rng, reverse, limit)}

    async def delete_all(self) -> None:
        self._batch.clear = True
        self._batch.writes.clear()

    async def get_alarm(self) -> int | None:
        if self._batch.alarm is not _UNSET:
            return self._batch.alarm
        return await self._storage.get_alarm()

    async def set_alarm(self, scheduled_time: int | float | datetime) -> None:
        self._batch.alarm = to_epoch_ms(scheduled_time)

    async def delete_alarm(self) -> None:
        self._batch.alarm = None

    def rollback(self) -> None:
        self.rolled_back = True

    def _apply(self) -> None:
        """Stage every change synchronously, so they commit in one SQLite transaction."""
        if self._batch.clear:
            self._storage._clear()
        for k, data in self._batch.writes.items():
            self._storage._write(k, data)
        if self._batch.alarm is not _UNSET:
            self._storage._set_alarm_ms(self._batch.alarm)


def now_ms() -> int:
    return int(time.time() * 1000)
