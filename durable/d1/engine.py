"""One D1 database: a SQLite file driven by a thread of its own, so no statement blocks the event
loop and statements run one at a time, in order, as D1 runs them. A batch is one transaction."""
from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_SQL_BYTES = 100_000  # D1's limit on one statement
MAX_BOUND = 100  # D1's limit on bound parameters per statement
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def database_file(state_dir: Path, key: str) -> Path:
    """Where a database (keyed by its id, else its name) lives under a state directory: the one
    path `wrangler dev` and `wrangler d1 execute --local` share."""
    return Path(state_dir) / "v3" / "d1" / f"{_SAFE.sub('_', key)}.sqlite"


class D1Failure(Exception):
    """SQLite refused a statement: its message, and which kind D1 reports it as."""

    def __init__(self, message: str, kind: str = "SQLITE_ERROR") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Outcome:
    """One statement's rows and D1's `meta` figures for it."""
    columns: list[str]
    rows: list[tuple[Any, ...]]
    changes: int
    last_row_id: int
    duration_ms: float
    changed_db: bool
    size_after: int


class D1File:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"d1-{path.stem}")
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=5000")  # `wrangler d1 execute` may write meanwhile
            self._db.execute("PRAGMA foreign_keys=ON")  # as D1 enforces them
        return self._db

    async def run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Outcome]:
        """Run the statements in one transaction (a batch) or, alone, as one statement."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, list(statements))

    async def migrate(self, sql: str, table: str, name: str) -> None:
        """One migration and its record, in one transaction: both, or neither."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._migrate, sql, table, name)

    def _migrate(self, sql: str, table: str, name: str) -> None:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            for statement in split_statements(sql):
                db.execute(statement)
            db.execute(f'INSERT INTO "{table}" (name) VALUES (?)', (name,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise D1Failure(str(exc), _kind(exc)) from None

    async def script(self, sql: str) -> int:
        """Run statements without parameters (D1's `exec`); how many ran."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._script, sql)

    def _run(self, statements: list[tuple[str, Sequence[Any]]]) -> list[Outcome]:
        db = self._connection()
        batch = len(statements) > 1
        try:
            if batch:
                db.execute("BEGIN IMMEDIATE")
            outcomes = [self._one(db, sql, params) for sql, params in statements]
            if batch:
                db.execute("COMMIT")
            return outcomes
        except sqlite3.Error as exc:
            if batch and db.in_transaction:
                db.execute("ROLLBACK")
            raise D1Failure(str(exc), _kind(exc)) from None
        except BaseException:
            if batch and db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _one(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Outcome:
        if len(sql.encode()) > MAX_SQL_BYTES:
            raise D1Failure(f"statement too long: D1 takes at most {MAX_SQL_BYTES} bytes", "SQLITE_TOOBIG")
        if len(params) > MAX_BOUND:
            raise D1Failure(f"too many SQL variables: D1 binds at most {MAX_BOUND}", "SQLITE_RANGE")
        before = db.total_changes
        started = time.perf_counter()
        cursor = db.execute(sql, tuple(params))
        rows = cursor.fetchall()
        columns = [d[0] for d in cursor.description or ()]
        changes = db.total_changes - before
        return Outcome(columns, rows, changes, cursor.lastrowid or 0, (time.perf_counter() - started) * 1000,
                       changes > 0, _size(db))

    def _script(self, sql: str) -> int:
        db = self._connection()
        count = 0
        try:
            for statement in split_statements(sql):
                db.execute(statement)
                count += 1
        except sqlite3.Error as exc:
            if db.in_transaction:  # a script that opened one leaves nothing half done
                db.execute("ROLLBACK")
            raise D1Failure(str(exc), _kind(exc)) from None
        return count

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        self._thread.submit(shut).result()
        self._thread.shutdown(wait=True)


def split_statements(sql: str) -> list[str]:
    """SQL text as the statements it holds, however they share lines (semicolons inside strings,
    comments and triggers respected: a statement ends where SQLite says it is complete)."""
    statements: list[str] = []
    start = 0
    for end, char in enumerate(sql):
        if char == ";" and sqlite3.complete_statement(sql[start:end + 1]):
            if sql[start:end].strip():
                statements.append(sql[start:end + 1].strip())
            start = end + 1
    rest = sql[start:].strip()
    if rest and not all(line.strip().startswith("--") or not line.strip() for line in rest.splitlines()):
        statements.append(rest)
    return statements


def _kind(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"


def _size(db: sqlite3.Connection) -> int:
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(db.execute("PRAGMA page_size").fetchone()[0])
