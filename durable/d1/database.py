"""`env.DB`: Cloudflare D1's Worker API over a `D1File`.

`prepare(sql).bind(*values)` makes a statement; `first(column?)`, `all()`, `run()` and
`raw(columnNames=?)` run it; `batch([...])` runs several in one transaction; `exec(sql)` runs
statements without parameters. Results read as D1's objects do, by attribute and by key
(`result.results[0].author`, `row["author"]`). Errors are D1's: `D1_ERROR: <message>: SQLITE_…`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..compat.ffi import JsArray, JsBuffer, JsObject, JsProxy
from .engine import D1Failure, D1File, Outcome

SERVED_BY = "miniflare.db"  # what a local D1 says it was served by


class D1Error(Exception):
    """What D1 raises: the message starts with D1's error type (`D1_ERROR`, `D1_TYPE_ERROR`, …)."""


class D1PreparedStatement:
    def __init__(self, database: D1Database, sql: str, params: tuple[Any, ...] = ()) -> None:
        self._database = database
        self.sql = sql
        self.params = params

    def bind(self, *values: Any) -> D1PreparedStatement:
        """A new statement with these values for its `?` (or `?NNN`) parameters."""
        return D1PreparedStatement(self._database, self.sql, tuple(_bindable(v) for v in values))

    async def first(self, column: str | None = None) -> Any:
        """The first row (None without one); with `column`, that column's value."""
        outcome = (await self._database._run([self]))[0]
        if not outcome.rows:
            return None
        row = _row(outcome.columns, outcome.rows[0])
        if column is None:
            return row
        if column not in row:
            raise D1Error(f"D1_COLUMN_NOTFOUND: Column not found ({column})")
        return row[column]

    async def all(self) -> JsObject:
        """`{results, success, meta}`: every row as an object."""
        return _result((await self._database._run([self]))[0])

    async def run(self) -> JsObject:
        """As `all()` (D1's `run` answers the same shape; writes read its `meta`)."""
        return await self.all()

    async def raw(self, options: Any = None, **keywords: Any) -> JsArray:
        """Rows as arrays; with `columnNames`, the column names first."""
        wanted = {**(dict(options) if options else {}), **keywords}
        outcome = (await self._database._run([self]))[0]
        rows = JsArray(JsArray(_value(v) for v in row) for row in outcome.rows)
        if wanted.get("columnNames") or wanted.get("column_names"):
            rows.insert(0, JsArray(outcome.columns))
        return rows

    def __repr__(self) -> str:
        return f"<D1PreparedStatement {self.sql[:40]!r}>"


class D1Database:
    def __init__(self, file: D1File, name: str = "") -> None:
        self._file = file
        self.name = name

    def prepare(self, sql: str) -> D1PreparedStatement:
        if not isinstance(sql, str):
            raise D1Error(f"D1_TYPE_ERROR: prepare() takes the SQL as a string, not {type(sql).__name__}")
        return D1PreparedStatement(self, sql)

    async def batch(self, statements: Sequence[D1PreparedStatement]) -> JsArray:
        """All the statements in one transaction: every result, or (one failing) none applied."""
        statements = list(statements)
        if not all(isinstance(s, D1PreparedStatement) for s in statements):
            raise D1Error("D1_TYPE_ERROR: batch() takes a list of prepared statements")
        if not statements:
            return JsArray()
        return JsArray(_result(outcome) for outcome in await self._run(statements))

    async def exec(self, sql: str) -> JsObject:
        """Statements without parameters, one after the other: `{count, duration}`."""
        started = time.perf_counter()
        try:
            count = await self._file.script(sql)
        except D1Failure as exc:
            raise D1Error(f"D1_EXEC_ERROR: Error in line 1: {sql.strip()[:60]}: {exc}: {exc.kind}") from None
        return JsObject(count=count, duration=(time.perf_counter() - started) * 1000)

    async def _run(self, statements: list[D1PreparedStatement]) -> list[Outcome]:
        try:
            return await self._file.run([(s.sql, s.params) for s in statements])
        except D1Failure as exc:
            raise D1Error(f"D1_ERROR: {exc}: {exc.kind}") from None

    # Cloudflare's spellings are the same words; `withSession` keeps reads on one copy there:
    # here there is one copy, so a session is the database itself
    def withSession(self, constraint: str | None = None) -> D1Database:  # noqa: N802 (JavaScript's name)
        return self

    with_session = withSession

    def __repr__(self) -> str:
        return f"<D1Database {self.name}>"


def _bindable(value: Any) -> Any:
    """D1's types: null, numbers, text, booleans (stored as 1/0) and ArrayBuffers (blobs)."""
    if value is None or isinstance(value, (str, int, float)):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, JsBuffer):
        return value.to_bytes()
    if isinstance(value, JsProxy) and not isinstance(value, (dict, list)):
        return _bindable(value.to_py())
    raise D1Error(f"D1_TYPE_ERROR: Type '{type(value).__name__}' not supported for value '{value!r}'")


def _value(value: Any) -> Any:
    return JsArray(value) if isinstance(value, bytes) else value  # a blob reads as an array of bytes


def _row(columns: list[str], values: tuple[Any, ...]) -> JsObject:
    return JsObject(zip(columns, (_value(v) for v in values)))


def _result(outcome: Outcome) -> JsObject:
    rows = JsArray(_row(outcome.columns, values) for values in outcome.rows)
    meta = JsObject(served_by=SERVED_BY, duration=outcome.duration_ms, changes=outcome.changes,
                    last_row_id=outcome.last_row_id, changed_db=outcome.changed_db, size_after=outcome.size_after,
                    rows_read=len(outcome.rows), rows_written=outcome.changes)
    return JsObject(success=True, meta=meta, results=rows)
