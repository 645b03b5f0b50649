"""The object browser's SQL: tables listed and queried through a read-only connection, so a
query typed into the page can never change an object's database."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from durable.observe.dashboard import objects
from durable.observe.dashboard.routes import _local_host


def _runtime(sql_dir: Path) -> SimpleNamespace:
    worker = SimpleNamespace(name="w", config=SimpleNamespace(created_as=lambda c: c),
                             hosts={"Notes": SimpleNamespace(sql_dir=sql_dir)})
    return SimpleNamespace(workers={"w": worker})


async def test_sql_is_read_only_and_tables_are_counted(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    oid = str(objects.object_id(runtime.workers["w"], "Notes", "room-1"))
    with sqlite3.connect(tmp_path / f"{oid}.sqlite") as db:
        db.executescript("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, raw BLOB);"
                         "INSERT INTO notes (body, raw) VALUES ('hi', x'00ff'), ('there', NULL);"
                         "CREATE TABLE _cf_KV (key TEXT, value BLOB);")
    assert await objects.sql_tables(tmp_path, oid) == [
        {"name": "notes", "sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, raw BLOB)", "rows": 2}]
    result = await objects.sql_query(runtime, "w", "Notes", "room-1", "SELECT body, raw FROM notes ORDER BY id")
    assert result["columns"] == ["body", "raw"]
    assert result["rows"] == [["hi", {"$bytes": "AP8=", "length": 2}], ["there", None]]
    attached, copy = tmp_path / "elsewhere.db", tmp_path / "copy.db"
    for write in ("DELETE FROM notes", "DROP TABLE notes", "INSERT INTO notes (body) VALUES ('x')",
                  f"ATTACH DATABASE '{attached}' AS other", f"VACUUM INTO '{copy}'", "PRAGMA query_only = OFF",
                  "PRAGMA writable_schema = ON", "SELECT load_extension('x')", "CREATE TEMP TABLE t (a)"):
        with pytest.raises(sqlite3.DatabaseError):
            await objects.sql_query(runtime, "w", "Notes", "room-1", write)
    with pytest.raises(sqlite3.OperationalError, match="interrupted"):  # a query that never ends is stopped
        await objects.sql_query(runtime, "w", "Notes", "room-1",
                                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n")
    with sqlite3.connect(tmp_path / f"{oid}.sqlite") as db:
        assert db.execute("SELECT count(*) FROM notes").fetchone()[0] == 2
    with pytest.raises(objects.NotFound):
        await objects.sql_query(runtime, "w", "Notes", "no-such-room", "SELECT 1")  # never creates a file
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{oid}.sqlite"]


def test_a_stored_value_renders_as_json_with_secrets_redacted() -> None:
    from datetime import datetime, timezone

    from durable.observe.tail import redactor
    redactor.add("sk_live_" + "z" * 24)
    text = objects.render({"when": datetime(2026, 1, 2, tzinfo=timezone.utc), "key": "sk_live_" + "z" * 24,
                           "raw": b"\x00\x01", "nan": float("nan")})
    assert "2026-01-02T00:00:00+00:00" in text and "z" * 24 not in text and '"length": 2' in text


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1:8000", True), ("localhost:1", True), ("[::1]:80", True),
                                             ("10.0.0.7:9", True), ("evil.example", False),
                                             ("evil.example:8000", False), ("localhost.evil.example", False)])
def test_only_a_local_host_reaches_a_dev_dashboard(host: str, local: bool) -> None:
    assert _local_host(host) is local
