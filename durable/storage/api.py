"""`ctx.storage`: the key-value and alarm API of one object, over whichever engine hosts it.

Writes land in memory at once (the engine's pending layer) and become durable with the engine's
next group commit; `sync()` is the output gate the runtime awaits before a reply leaves.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import codec
from ..errors import ObjectMoved
from ..gates import InputGate
from .batch import UNSET, KeyRange, ObjectBatch, key_range, merge_listing
from .engine import Engine
from .sql import SqlStorage

MAX_KEY_BYTES = 2048
MAX_VALUE_BYTES = 2 * 1024 * 1024
MAX_KEYS_PER_CALL = 128
CACHE_ENTRIES = 10_000

_MISSING: Any = object()


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

    def __init__(self, engine: Engine, object_id: str, gate: InputGate | None = None,
                 on_alarm_change: Callable[[int | None], None] | None = None,
                 sql_dir: Path | str | None = None) -> None:
        self._engine = engine
        self._object_id = object_id
        self._gate = gate or InputGate()
        self._on_alarm_change = on_alarm_change
        # a SQLite-backed class's folder of per-object databases; otherwise why `sql` is refused
        self._sql_dir = sql_dir if isinstance(sql_dir, Path) else None
        self._sql_refusal = sql_dir if isinstance(sql_dir, str) else (
            "SQL storage is for classes created with new_sqlite_classes in a [[migrations]] entry")
        self._sql: SqlStorage | None = None
        self._cache: dict[str, bytes | None] = {}
        self.last_seq = 0  # engine sequence of this object's newest write: its output gate
        self.running_alarm: int | None = None  # the scheduled time of the alarm() event running now
        self._revoked: str | None = None  # why this instance may no longer write (see revoke)

    def _stage(self) -> ObjectBatch:
        if self._revoked is not None:
            self._engine.refused_writes += 1
            raise ObjectMoved(self._revoked)
        batch = self._engine.stage(self._object_id)
        self.last_seq = self._engine.seq
        return batch

    # -- internal, synchronous ------------------------------------------------------------
    def _read(self, key: str) -> bytes | None:
        if self._revoked is not None:  # what the engine has now is a newer instance's (or nothing)
            raise ObjectMoved(self._revoked)
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
        if self._revoked is not None:
            raise ObjectMoved(self._revoked)
        return self._engine.list(self._object_id, rng, reverse, limit)

    # one key at a time, synchronously: the async API and `ctx.storage.kv` are both these
    def _get_value(self, key: str) -> Any:
        data = self._read(_check_key(key))
        return None if data is None else codec.decode(data)

    def _put_value(self, key: str, value: Any) -> None:
        k = _check_key(key)
        self._write(k, _encode_value(k, value))

    def _delete_key(self, key: str) -> bool:
        k = _check_key(key)
        existed = self._read(k) is not None
        self._write(k, None)
        return existed

    def _entries(self, prefix: str | None, start: str | None, start_after: str | None, end: str | None,
                 limit: int | None, reverse: bool, cloudflare: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        start_after = _options(cloudflare, _LIST_OPTIONS).get("startAfter", start_after)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError("list(limit=) must be a positive int")
        rows = self._list_raw(key_range(prefix, start, start_after, end), reverse, limit)
        return ((k, codec.decode(v)) for k, v in rows)

    def _clear(self) -> None:
        batch = self._stage()
        batch.clear = True
        batch.writes.clear()
        self._cache.clear()

    def _set_alarm_ms(self, ms: int | None) -> None:
        if self._revoked is not None:  # moved away: no timer here either (it would run on a non-owner)
            self._engine.refused_writes += 1
            raise ObjectMoved(self._revoked)
        if self._on_alarm_change is not None:
            self._on_alarm_change(ms)  # may refuse (class without alarm()) before anything is staged
        self._stage().alarm = ms

    def clear_ran_alarm(self) -> None:
        """The alarm that just ran is done: clear it in this object's batch (inside its output
        gate), without rescheduling anything."""
        self._stage().alarm = None

    def invalidate(self) -> None:
        """Forget cached values (after a failed commit the cache may hold what never landed)."""
        self._cache.clear()

    def revoke(self, reason: str) -> None:
        """This instance is no longer the object's live one (its shard moved): every read and
        write of work still under way raises ObjectMoved from now on. Its writes would
        otherwise be fenced by the epoch current when they are made, which is a newer instance's
        if the shard came back to this node meanwhile."""
        self._revoked = reason

    def release(self) -> None:
        """The instance is gone: commit and close its SQL database, if it opened one."""
        if self._sql is not None:
            self._sql.close()  # kept: sync() still waits for what it committed to reach the disk

    # -- SQL (SQLite-backed classes) --------------------------------------------------------
    @property
    def sql(self) -> SqlStorage:
        """`ctx.storage.sql`: this object's own SQLite database."""
        if self._sql is None:
            if self._sql_dir is None:
                raise TypeError(self._sql_refusal)
            self._sql = SqlStorage(self._sql_path())
        return self._sql

    def _sql_path(self) -> Path:
        assert self._sql_dir is not None
        return self._sql_dir / f"{self._object_id}.sqlite"

    @property
    def kv(self) -> SyncKvStorage:
        """`ctx.storage.kv`: the key-value API, synchronously (SQLite-backed classes, as on Cloudflare)."""
        if self._sql_dir is None:
            raise TypeError(self._sql_refusal.replace("SQL storage", "ctx.storage.kv"))
        return SyncKvStorage(self)

    def transaction_sync(self, closure: Callable[[], Any]) -> Any:
        """Run `closure()` (synchronous) so its SQL statements land together or not at all."""
        return self.sql.transaction_sync(closure)

    # -- public API -----------------------------------------------------------------------
    async def get(self, key: str | Iterable[str], *, allow_concurrency: bool = False, no_cache: bool = False,
                  **cloudflare: Any) -> Any:
        """One key → its value or None; a list of keys → dict of the keys that exist.
        `allow_concurrency` and `no_cache` (Cloudflare's allowConcurrency, noCache) are accepted:
        reads never open the input gate here, and the cache is always coherent."""
        _options(cloudflare, _READ_OPTIONS)
        if self._engine.meter is not None:
            self._engine.meter.reads.inc()
        if isinstance(key, str):
            return self._get_value(key)
        found: dict[str, Any] = {}
        for k in _check_many(key):
            data = self._read(k)
            if data is not None:
                found[k] = codec.decode(data)
        return found

    async def put(self, key: str | Mapping[str, Any], value: Any = _MISSING, *,
                  allow_unconfirmed: bool = False, allow_concurrency: bool = False, no_cache: bool = False,
                  **cloudflare: Any) -> None:
        """`allow_unconfirmed` (Cloudflare's allowUnconfirmed): replies need not wait for this
        write to be durable — for state whose loss in a crash is harmless (rate-limit buckets)."""
        allow_unconfirmed = _options(cloudflare, _WRITE_OPTIONS).get("allowUnconfirmed", allow_unconfirmed)
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
            self._put_value(key, value)
        if allow_unconfirmed:
            self.last_seq = gate

    async def delete(self, key: str | Iterable[str]) -> bool | int:
        """One key → whether it existed; a list → how many existed."""
        if isinstance(key, str):
            return self._delete_key(key)
        return sum(self._delete_key(k) for k in _check_many(key))

    async def list(self, *, prefix: str | None = None, start: str | None = None,
                   start_after: str | None = None, end: str | None = None,
                   limit: int | None = None, reverse: bool = False, **cloudflare: Any) -> dict[str, Any]:
        if self._engine.meter is not None:
            self._engine.meter.reads.inc()
        return dict(self._entries(prefix, start, start_after, end, limit, reverse, cloudflare))

    async def delete_all(self) -> None:
        """Delete every key, every SQL table and the alarm (as with compatibility dates from 2026)."""
        self._clear()
        self._set_alarm_ms(None)
        if self._sql is not None or (self._sql_dir is not None and self._sql_path().exists()):
            self.sql.delete_all()

    async def transaction(self, closure: Callable[[Transaction], Awaitable[Any]]) -> Any:
        """Run `closure(txn)` with the object to itself; its writes land all together or not at all."""
        async with self._gate.exclusive():
            txn = Transaction(self)
            result = await closure(txn)
            if not txn.rolled_back:
                txn._apply()
            return result

    @property
    def synced(self) -> bool:
        """Nothing for `sync()` to wait for (a hot path asks before awaiting it)."""
        return self._sql is None and self._engine.durable_up_to(self.last_seq)

    async def sync(self) -> None:
        """Wait until every write this object made so far is durable."""
        await self._engine.flush(self.last_seq, self._object_id)
        if self._sql is not None:
            await self._sql.flush()

    async def get_alarm(self) -> int | None:
        """Inside `alarm()`, the alarm that is running is already spent: None unless re-set."""
        ms = self._engine.read_alarm(self._object_id)
        return None if ms is not None and ms == self.running_alarm else ms

    async def set_alarm(self, scheduled_time: int | float | datetime) -> None:
        self._set_alarm_ms(to_epoch_ms(scheduled_time))

    async def delete_alarm(self) -> None:
        self._set_alarm_ms(None)

    # Cloudflare's spellings
    getAlarm = get_alarm
    setAlarm = set_alarm
    deleteAlarm = delete_alarm
    deleteAll = delete_all
    transactionSync = transaction_sync


_READ_OPTIONS = frozenset({"allowConcurrency", "noCache"})
_WRITE_OPTIONS = _READ_OPTIONS | {"allowUnconfirmed"}
_LIST_OPTIONS = _READ_OPTIONS | {"startAfter"}


def _options(given: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """Cloudflare's camelCase options, checked: a misspelt one is an error, not a silent no-op."""
    unknown = given.keys() - known
    if unknown:
        raise TypeError(f"unknown storage option(s) {', '.join(sorted(unknown))}")
    return given


class SyncKvStorage:
    """Cloudflare's `ctx.storage.kv`: the same keys and values as the async API, without awaiting
    (reads and writes here never wait anyway); writes reach the disk with the next group commit."""

    def __init__(self, storage: DurableObjectStorage) -> None:
        self._storage = storage

    def get(self, key: str) -> Any:
        return self._storage._get_value(key)

    def put(self, key: str, value: Any) -> None:
        self._storage._put_value(key, value)

    def delete(self, key: str) -> bool:
        return self._storage._delete_key(key)

    def list(self, *, prefix: str | None = None, start: str | None = None, start_after: str | None = None,
             end: str | None = None, limit: int | None = None, reverse: bool = False,
             **cloudflare: Any) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs in key order, as Cloudflare's iterable of entries."""
        return self._storage._entries(prefix, start, start_after, end, limit, reverse, cloudflare)


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
        if self._batch.alarm is not UNSET:
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
        if self._batch.alarm is not UNSET:
            self._storage._set_alarm_ms(self._batch.alarm)


def now_ms() -> int:
    return int(time.time() * 1000)
