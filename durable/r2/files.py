"""An R2 bucket on this host's disk: records in a SQLite index, blobs as files beside it
(`<state>/v3/r2/<bucket>/`). Every process of one state directory shares it (WAL, compare-and-set
swaps); a blob is written to a temporary name and renamed, so no reader sees half of one."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .store import CHUNK, BlobGone, Part, Record, Upload

T = TypeVar("T")


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "index.sqlite", check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, version TEXT NOT NULL, doc TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS uploads (upload_id TEXT PRIMARY KEY, doc TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS parts (upload_id TEXT, number INTEGER, doc TEXT NOT NULL,"
            " PRIMARY KEY (upload_id, number));"
            "CREATE TABLE IF NOT EXISTS retired (blob TEXT PRIMARY KEY, due_ms INTEGER NOT NULL);")
        # one thread runs every statement, in order: a caller that gives up (cancelled) cannot let
        # another statement in while its transaction is still open on the shared connection
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="r2-index")

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def _sql(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._in_thread(lambda: self._db.execute(sql, args).fetchall())

    async def head(self, key: str) -> Record | None:
        rows = await self._sql("SELECT doc FROM objects WHERE key = ?", (key,))
        return Record.from_doc(json.loads(rows[0][0])) if rows else None

    async def swap(self, key: str, expected_version: str | None, new: Record | None) -> bool:
        def run() -> bool:
            with self._db:  # one transaction: the check and the change land together
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT version FROM objects WHERE key = ?", (key,)).fetchone()
                if (row[0] if row else None) != expected_version:
                    return False
                if new is None:
                    self._db.execute("DELETE FROM objects WHERE key = ?", (key,))
                else:
                    self._db.execute("INSERT OR REPLACE INTO objects (key, version, doc) VALUES (?, ?, ?)",
                                     (key, new.version, json.dumps(new.to_doc())))
                return True
        return await self._in_thread(run)

    async def list(self, prefix: str, after: str, limit: int) -> list[Record]:
        # SQLite compares TEXT by bytes of UTF-8: the order of code points, as R2 lists
        rows = await self._sql("SELECT doc FROM objects WHERE key > ? AND substr(key, 1, ?) = ? ORDER BY key LIMIT ?",
                               (after, len(prefix), prefix, limit))
        return [Record.from_doc(json.loads(doc)) for (doc,) in rows]

    def _path(self, blob: str) -> Path:
        return self.blobs / blob

    async def write_blob(self, blob: str, chunks: AsyncIterator[bytes]) -> int:
        temporary = self.blobs / f".{blob}.partial"
        handle = await asyncio.to_thread(open, temporary, "wb")
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(lambda: (handle.flush(), os.fsync(handle.fileno())))
        except BaseException:
            await asyncio.to_thread(lambda: (handle.close(), temporary.unlink(missing_ok=True)))
            raise
        await asyncio.to_thread(lambda: (handle.close(), os.replace(temporary, self._path(blob))))
        return size

    async def read_blob(self, blob: str, offset: int, length: int) -> AsyncIterator[bytes]:
        try:
            handle = await asyncio.to_thread(open, self._path(blob), "rb")
        except FileNotFoundError:
            raise BlobGone(blob) from None
        try:  # an open file reads on even if the blob is removed meanwhile
            await asyncio.to_thread(handle.seek, offset)
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            handle.close()

    async def delete_blob(self, blob: str) -> None:
        await asyncio.to_thread(self._path(blob).unlink, missing_ok=True)

    async def retire(self, blob: str, due_ms: int) -> None:
        await self._sql("INSERT OR REPLACE INTO retired (blob, due_ms) VALUES (?, ?)", (blob, due_ms))

    async def sweep(self, now_ms: int) -> list[str]:
        return [blob for (blob,) in await self._sql("DELETE FROM retired WHERE due_ms <= ? RETURNING blob", (now_ms,))]

    async def create_upload(self, upload: Upload) -> None:
        await self._sql("INSERT INTO uploads (upload_id, doc) VALUES (?, ?)",
                        (upload.upload_id, json.dumps(upload.__dict__)))

    async def get_upload(self, upload_id: str) -> Upload | None:
        rows = await self._sql("SELECT doc FROM uploads WHERE upload_id = ?", (upload_id,))
        return Upload(**json.loads(rows[0][0])) if rows else None

    async def put_part(self, upload_id: str, part: Part) -> Part | None:
        def run() -> Part | None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT doc FROM parts WHERE upload_id = ? AND number = ?",
                                       (upload_id, part.number)).fetchone()
                self._db.execute("INSERT OR REPLACE INTO parts (upload_id, number, doc) VALUES (?, ?, ?)",
                                 (upload_id, part.number, json.dumps(part.__dict__)))
                return Part(**json.loads(row[0])) if row else None
        return await self._in_thread(run)

    async def parts(self, upload_id: str) -> list[Part]:
        rows = await self._sql("SELECT doc FROM parts WHERE upload_id = ? ORDER BY number", (upload_id,))
        return [Part(**json.loads(doc)) for (doc,) in rows]

    async def end_upload(self, upload_id: str) -> bool:
        def run() -> bool:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                gone = self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,)).rowcount
                self._db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
                return gone > 0
        return await self._in_thread(run)

    async def close(self) -> None:
        await self._in_thread(self._db.close)
        self._thread.shutdown()
