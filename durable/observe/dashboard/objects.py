"""The object browser: one Durable Object's stored keys, alarm, SQL tables and open WebSockets,
read the way an onlooker must (no instance made, no cache filled, SQL opened read-only)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from bson.decimal128 import Decimal128
from bson.errors import BSONError

from ... import codec, ids
from ...ids import DurableObjectId
from ..tail import redactor

KEYS_SHOWN = 200
ROWS_SHOWN = 100
QUERY_SECONDS = 2.0  # a query typed into the page is stopped after this
# reading is all a query from the page may do: no writes, pragmas, ATTACH (it creates files) or
# extensions; the connection is read-only besides, and its threads are its own (a slow query
# never holds up the runtime's shared pool)
_READS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
_REFUSED_FUNCTIONS = frozenset({"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"})
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dashboard-sql")


class NotFound(LookupError):
    """No such worker or class in this process."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, DurableObjectId):
        return {"$id": str(value), "name": value.name}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return {"$bytes": base64.b64encode(raw[:1024]).decode(), "length": len(raw)}
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    return str(value)  # ObjectId and the other BSON types


def render(value: Any) -> str:
    """A stored value as indented JSON, secrets redacted as in a tail."""
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    return redactor(json.dumps(value, default=_jsonable, indent=2, ensure_ascii=False, allow_nan=True))


def _decoded(raw: bytes) -> str:
    try:
        return render(codec.decode(raw))
    except (BSONError, ValueError, TypeError) as exc:
        return f"(cannot decode {len(raw)} bytes: {exc})"


def object_id(worker: Any, class_name: str, key: str) -> DurableObjectId:
    """An id as pasted (64 hex, checked against the namespace) or the id a name gives."""
    namespace = ids.namespace_key(worker.name, worker.config.created_as(class_name))
    key = key.strip()
    if len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
        try:
            return ids.id_from_string(namespace, key)
        except ValueError:
            pass  # not an id of this class: a name that happens to look like one
    return ids.id_from_name(namespace, key)


def host_of(runtime: Any, script: str, class_name: str) -> tuple[Any, Any]:
    worker = runtime.workers.get(script)
    if worker is None or class_name not in worker.hosts:
        raise NotFound(f"no Durable Object class {class_name!r} in worker {script!r} here")
    return worker, worker.hosts[class_name]


async def inspect(runtime: Any, script: str, class_name: str, key: str) -> dict[str, Any]:
    """What the browser shows of one object."""
    worker, host = host_of(runtime, script, class_name)
    oid = object_id(worker, class_name, key)
    rows, alarm_ms = await host.engine.peek(str(oid), KEYS_SHOWN + 1)
    rendered = await asyncio.to_thread(lambda: [_decoded(v) for _, v in rows[:KEYS_SHOWN]])  # values may be large
    live = host.live_info(str(oid))
    return {"worker": script, "class": class_name, "id": str(oid), "name": oid.name,
            "live": live is not None, "inflight": live["inflight"] if live else 0,
            "idleS": live["idleS"] if live else None,
            "keys": [{"key": k, "bytes": len(v), "value": text} for (k, v), text in zip(rows, rendered)],
            "moreKeys": len(rows) > KEYS_SHOWN,
            "alarm": None if alarm_ms is None else datetime.fromtimestamp(alarm_ms / 1000).astimezone().isoformat(),
            "alarmMs": alarm_ms,
            "webSockets": [{"tags": list(ws.tags), "readyState": ws.readyState} for ws in host.websockets(oid)],
            "sqlTables": await sql_tables(host.sql_dir, str(oid))}


def _sql_path(sql_dir: Path | str | None, oid: str) -> Path | None:
    if not isinstance(sql_dir, Path):
        return None  # not a SQLite-backed class, or a cluster (which refuses SQL storage)
    path = sql_dir / f"{oid}.sqlite"
    return path if path.exists() else None


def _authorize(action: int, arg1: str | None, arg2: str | None, database: str | None, trigger: str | None) -> int:
    if action not in _READS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """The object's database opened to read (never created), every statement checked, stopped
    after QUERY_SECONDS, and closed after."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.set_authorizer(_authorize)
        give_up = time.monotonic() + QUERY_SECONDS
        connection.set_progress_handler(lambda: int(time.monotonic() > give_up), 10_000)
        yield connection
    finally:
        connection.close()


async def _in_pool(work: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_POOL, work)


async def sql_tables(sql_dir: Path | str | None, oid: str) -> list[dict[str, Any]]:
    path = _sql_path(sql_dir, oid)
    if path is None:
        return []

    def tables() -> list[dict[str, Any]]:
        with _read_only(path) as connection:
            found = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%' ORDER BY name").fetchall()
            return [{"name": name, "sql": sql,
                     "rows": connection.execute(f'SELECT count(*) FROM "{name.replace(chr(34), chr(34) * 2)}"').fetchone()[0]}
                    for name, sql in found]
    return await _in_pool(tables)


async def sql_query(runtime: Any, script: str, class_name: str, key: str, query: str) -> dict[str, Any]:
    """A query that only reads, in the object's SQL database (sqlite3.DatabaseError otherwise)."""
    worker, host = host_of(runtime, script, class_name)
    path = _sql_path(host.sql_dir, str(object_id(worker, class_name, key)))
    if path is None:
        raise NotFound("this object has no SQL database here")

    def run() -> dict[str, Any]:
        with _read_only(path) as connection:
            cursor = connection.execute(query)
            columns = [c[0] for c in cursor.description or []]
            rows = cursor.fetchmany(ROWS_SHOWN + 1)
        return {"columns": columns, "rows": [[_cell(v) for v in row] for row in rows[:ROWS_SHOWN]],
                "more": len(rows) > ROWS_SHOWN}
    return await _in_pool(run)


def _cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value[:256]).decode(), "length": len(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value

