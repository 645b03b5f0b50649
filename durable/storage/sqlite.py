"""Object storage on SQLite: the single-node back end.

One database per namespace (`kv(object_id, key, value)` and `alarms(object_id, scheduled_ms)`,
WAL mode): millions of small objects (one per idempotency key, say) stay one file, and one
writer thread commits each group of writes as one transaction. Reads never leave the event
loop: a point read on a reader connection costs microseconds.
"""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .batch import UNSET, KeyRange, ObjectBatch
from .engine import Engine

ID_FORMAT = 1  # PRAGMA user_version: 1 = object ids carry their namespace's mark


class StorageEngine(Engine):
    """The SQLite database of one namespace, with a single group-committing writer thread."""
    kind = "SQLite"  # what onlookers are told it stores in

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        super().__init__()
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
        self._id_format = self._wconn.execute("PRAGMA user_version").fetchone()[0]
        if self._id_format < ID_FORMAT and not self._wconn.execute(
                "SELECT 1 FROM kv UNION ALL SELECT 1 FROM alarms LIMIT 1").fetchone():
            self._wconn.execute(f"PRAGMA user_version={ID_FORMAT}")  # a new store: nothing to convert
            self._id_format = ID_FORMAT
        self._rconn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._rconn.execute("PRAGMA query_only=1")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"do-writer-{self.path.parent.name}")

    def __repr__(self) -> str:
        return f"<StorageEngine {self.path}>"

    async def remark_ids(self, convert: Callable[[str], str]) -> int:
        if self._id_format >= ID_FORMAT:
            return 0
        count = await asyncio.get_running_loop().run_in_executor(self._executor, self._remark_sync, convert)
        self._id_format = ID_FORMAT
        return count

    def _remark_sync(self, convert: Callable[[str], str]) -> int:
        conn = self._wconn
        conn.create_function("remark", 1, convert, deterministic=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            count = conn.execute("SELECT COUNT(DISTINCT object_id) FROM kv").fetchone()[0]
            conn.execute("UPDATE kv SET object_id = remark(object_id)")
            conn.execute("UPDATE alarms SET object_id = remark(object_id)")
            conn.execute(f"PRAGMA user_version={ID_FORMAT}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return count

    async def _commit(self, batch: dict[str, ObjectBatch]) -> dict[str, BaseException]:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._commit_sync, batch)
        return {}

    def _commit_sync(self, batch: dict[str, ObjectBatch]) -> None:
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
                elif ob.alarm is not UNSET:
                    conn.execute("INSERT OR REPLACE INTO alarms (object_id, scheduled_ms) VALUES (?, ?)",
                                 (object_id, ob.alarm))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _committed_read(self, object_id: str, key: str) -> bytes | None:
        row = self._rconn.execute(
            "SELECT value FROM kv WHERE object_id = ? AND key = ?", (object_id, key)).fetchone()
        return row[0] if row else None

    def _committed_list(self, object_id: str, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
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

    def _committed_alarm(self, object_id: str) -> int | None:
        row = self._rconn.execute("SELECT scheduled_ms FROM alarms WHERE object_id = ?", (object_id,)).fetchone()
        return row[0] if row else None

    def all_alarms(self) -> list[tuple[str, int]]:
        return self._rconn.execute("SELECT object_id, scheduled_ms FROM alarms").fetchall()

    def object_count(self) -> int:
        return self._rconn.execute("SELECT COUNT(DISTINCT object_id) FROM kv").fetchone()[0]

    async def _close_backend(self) -> None:
        self._executor.shutdown(wait=True)
        self._rconn.close()
        self._wconn.close()
