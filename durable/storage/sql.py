"""`ctx.storage.sql`: a SQLite-backed object's own database (Cloudflare's SqlStorage).

Statements run synchronously on the object's connection, as on Cloudflare. Writes open an
implicit transaction that commits when the handler next yields to the event loop. The commit
itself skips fsync (WAL with synchronous=NORMAL: it survives a killed process); a writer thread
then fsyncs the log, and that is what the output gate (`flush`) waits for before a reply leaves.
"""
from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_FSYNC = ThreadPoolExecutor(1, thread_name_prefix="do-sql-fsync")
# what user SQL may not do: the runtime owns transactions, attachments and the journal
_DENIED = frozenset({sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_ATTACH,
                     sqlite3.SQLITE_DETACH})
_READ_ONLY_PRAGMAS = frozenset({"table_info", "table_xinfo", "table_list", "index_list", "index_info",
                                "index_xinfo", "foreign_key_list", "foreign_key_check", "quick_check",
                                "integrity_check", "optimize", "data_version"})
_SETTABLE_PRAGMAS = frozenset({"foreign_keys", "defer_foreign_keys", "case_sensitive_like", "recursive_triggers",
                               "legacy_alter_table", "reverse_unordered_selects"})
_RESERVED_PREFIX = "_cf_"


class SqlError(Exception):
    """A statement SQLite refused (syntax, constraint, a denied operation), with SQLite's words."""


class Row(dict[str, Any]):
    """One result row: `row["name"]` or `row.name`, as a JavaScript object reads in Python Workers."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class SqlStorageCursor:
    """What `exec` returns: iterate it, or `toArray()`, `one()`, `raw()`; single pass, as on Cloudflare."""

    def __init__(self, columns: list[str], rows: list[tuple[Any, ...]], rows_read: int, rows_written: int) -> None:
        self.columnNames = columns
        self.rowsRead = rows_read
        self.rowsWritten = rows_written
        self._rows = iter(rows)

    def __iter__(self) -> Iterator[Row]:
        return self

    def __next__(self) -> Row:
        return Row(zip(self.columnNames, next(self._rows)))

    def next(self) -> dict[str, Any]:
        """JavaScript's iterator protocol: {done, value}."""
        try:
            return {"done": False, "value": self.__next__()}
        except StopIteration:
            return {"done": True}

    def toArray(self) -> list[Row]:
        return list(self)

    def one(self) -> Row:
        rows = self.toArray()
        if len(rows) != 1:
            raise SqlError(f"Expected exactly one result from SQL query, but got {'no' if not rows else len(rows)} results.")
        return rows[0]

    def raw(self) -> Iterator[list[Any]]:
        return (list(row) for row in self._rows)

    # Python spellings
    to_array = toArray
    column_names = property(lambda self: self.columnNames)
    rows_read = property(lambda self: self.rowsRead)
    rows_written = property(lambda self: self.rowsWritten)


def split_statements(query: str) -> list[str]:
    """Statements of `query` in order (SQLite's own completeness test finds where each ends)."""
    statements, start = [], 0
    for match in re.finditer(";", query):
        piece = query[start:match.end()]
        if sqlite3.complete_statement(piece):
            statements.append(piece)
            start = match.end()
    rest = query[start:]
    if rest.strip():
        statements.append(rest)
    return [s for s in statements if s.strip().strip(";").strip()]


class SqlStorage:
    """The database of one object. Opened on first use; `close()` commits and lets go of the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._opened_at = (0, 0)  # (rows changed, schema version) when the open transaction began
        self._internal = False
        self._commits = 0
        self._durable = 0
        self._syncing: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    # -- connection -----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # the fsync happens off the event loop, in flush()
            conn.set_authorizer(self._authorize)
            self._conn = conn
        return self._conn

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None) -> int:
        if self._internal:
            return sqlite3.SQLITE_OK
        if action in _DENIED:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            allowed = name in _READ_ONLY_PRAGMAS or (name in _SETTABLE_PRAGMAS)
            return sqlite3.SQLITE_OK if allowed else sqlite3.SQLITE_DENY
        if arg1 and arg1.lower().startswith(_RESERVED_PREFIX) and action != sqlite3.SQLITE_READ:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    @contextmanager
    def _as_runtime(self) -> Iterator[sqlite3.Connection]:
        """The runtime's own statements (transactions, pragmas, deleteAll) pass the authorizer."""
        conn = self._connection()
        self._internal = True
        try:
            yield conn
        finally:
            self._internal = False

    def _run_internal(self, sql: str) -> None:
        with self._as_runtime() as conn:
            conn.execute(sql)

    def _begin(self) -> None:
        """Open the implicit transaction; it commits when the handler next yields."""
        if not self._connection().in_transaction:
            self._run_internal("BEGIN")
            self._opened_at = self._state()
            asyncio.get_running_loop().call_soon(self.commit)

    def _state(self) -> tuple[int, int]:
        """What a transaction that wrote changes: rows changed, and the schema's version (DDL)."""
        with self._as_runtime() as conn:
            return conn.total_changes, conn.execute("PRAGMA schema_version").fetchone()[0]

    # -- Cloudflare's API -----------------------------------------------------------------
    def exec(self, query: str, *bindings: Any) -> SqlStorageCursor:
        """Run one statement, or several separated by `;` (bindings only with one)."""
        statements = split_statements(query)
        if not statements:
            raise SqlError("exec() needs a SQL statement")
        if bindings and len(statements) > 1:
            raise SqlError("bindings can only be used with a single statement")
        conn = self._connection()
        self._begin()
        before = conn.total_changes
        cursor: sqlite3.Cursor | None = None
        rows: list[tuple[Any, ...]] = []
        try:
            for statement in statements:
                cursor = conn.execute(statement, bindings)
                rows = cursor.fetchall()
        except sqlite3.Error as exc:
            raise SqlError(_explain(exc)) from None
        columns = [d[0] for d in cursor.description] if cursor is not None and cursor.description else []
        written = conn.total_changes - before
        return SqlStorageCursor(columns, rows, len(rows), written)

    def transaction_sync(self, closure: Callable[[], Any]) -> Any:
        """Run `closure()` so that its statements land together, or (when it raises) not at all."""
        self._begin()
        self._run_internal("SAVEPOINT txn_sync")
        try:
            result = closure()
        except BaseException:
            self._run_internal("ROLLBACK TO txn_sync")
            self._run_internal("RELEASE txn_sync")
            raise
        self._run_internal("RELEASE txn_sync")
        return result

    @property
    def databaseSize(self) -> int:
        """Bytes the database takes (pages × page size)."""
        with self._as_runtime() as conn:
            return conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]

    # -- the runtime's side ---------------------------------------------------------------
    def commit(self) -> None:
        """End the implicit transaction (a failure rolls it back; flush() then reports it)."""
        conn = self._conn
        if conn is None or not conn.in_transaction:
            return
        try:
            wrote = self._state() != self._opened_at
            self._run_internal("COMMIT")
            if wrote:  # only a transaction that wrote has anything for the output gate to wait for
                self._commits += 1
        except sqlite3.Error as exc:
            self._failure = exc
            try:
                self._run_internal("ROLLBACK")
            except sqlite3.Error:
                pass

    async def flush(self) -> None:
        """Wait until every committed write is on disk: the output gate's part for SQL."""
        self.commit()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise SqlError(f"the SQL storage commit failed: {failure}")
        while self._durable < self._commits:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync(self._commits))
            await asyncio.shield(self._syncing)

    async def _sync(self, target: int) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(_FSYNC, _fsync_wal, self.path)
            self._durable = max(self._durable, target)
        finally:
            self._syncing = None

    def delete_all(self) -> None:
        """deleteAll(): every table and view goes, in the implicit transaction."""
        self._begin()
        with self._as_runtime() as conn:
            found = conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
                                 "AND name NOT LIKE 'sqlite_%'").fetchall()
            conn.execute("PRAGMA defer_foreign_keys=ON")
            for kind, name in found:
                conn.execute(f'DROP {kind.upper()} IF EXISTS "{name.replace(chr(34), chr(34) * 2)}"')
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
                conn.execute("DELETE FROM sqlite_sequence")  # AUTOINCREMENT counters start over

    def close(self) -> None:
        if self._conn is not None:
            self.commit()
            self._conn.close()
            self._conn = None

    # Python spellings
    database_size = databaseSize
    transactionSync = transaction_sync


def _fsync_wal(path: Path) -> None:
    """fsync the write-ahead log (through any descriptor: the kernel flushes the file's pages)."""
    for name in (f"{path}-wal", str(path)):
        try:
            fd = os.open(name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if text == "not authorized":
        return "not authorized: the runtime owns transactions (use transactionSync), ATTACH, most PRAGMAs " \
               f"and {_RESERVED_PREFIX}* tables"
    return text
