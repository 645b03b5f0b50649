"""D1's Worker API on a real SQLite file: result shapes, D1's types and limits, errors in D1's
words, atomic batches, and statements from concurrent callers each applied once."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable.d1 import D1Database, D1Error
from durable.d1.engine import D1File, database_file


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[D1Database]:
    file = D1File(database_file(tmp_path, "test-db"))
    database = D1Database(file, "test")
    await database.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, flag INTEGER, data BLOB);")
    yield database
    await asyncio.to_thread(file.close)


async def test_all_first_raw_and_run_answer_d1_s_shapes(db: D1Database) -> None:
    written = await db.prepare("INSERT INTO t (name, flag, data) VALUES (?1, ?2, ?3)").bind("a", True, b"\x00\x01").run()
    assert written.success is True and written.meta.changes == 1 and written.meta["last_row_id"] == 1
    assert written.meta.changed_db is True and written.meta.rows_written == 1 and written.meta.served_by
    result = await db.prepare("SELECT name, flag, data FROM t").all()
    assert result.results[0].name == "a" and result["results"][0]["flag"] == 1  # a boolean is stored as 1
    assert list(result.results[0].data) == [0, 1]  # a blob reads as an array of bytes
    assert result.meta.rows_read == 1 and result.meta.changes == 0
    assert await db.prepare("SELECT name FROM t WHERE id = ?").bind(1).first("name") == "a"
    assert await db.prepare("SELECT name FROM t WHERE id = ?").bind(99).first() is None
    assert await db.prepare("SELECT id, name FROM t").raw() == [[1, "a"]]
    assert await db.prepare("SELECT id, name FROM t").raw({"columnNames": True}) == [["id", "name"], [1, "a"]]


async def test_errors_are_d1_s_and_a_statement_that_fails_changes_nothing(db: D1Database) -> None:
    with pytest.raises(D1Error, match=r"^D1_ERROR: no such table: nope: SQLITE_ERROR$"):
        await db.prepare("SELECT * FROM nope").all()
    with pytest.raises(D1Error, match=r"^D1_ERROR: NOT NULL constraint failed: t.name"):
        await db.prepare("INSERT INTO t (name) VALUES (?)").bind(None).run()
    with pytest.raises(D1Error, match="^D1_TYPE_ERROR: Type 'dict' not supported"):
        db.prepare("SELECT ?").bind({"a": 1})
    with pytest.raises(D1Error, match="^D1_COLUMN_NOTFOUND"):
        await db.prepare("SELECT 1 AS one").first("two")
    with pytest.raises(D1Error, match="too many SQL variables"):
        await db.prepare("SELECT " + ", ".join("?" * 101)).bind(*range(101)).all()
    with pytest.raises(D1Error, match="statement too long"):
        await db.prepare("SELECT '" + "x" * 100_001 + "'").all()
    assert await db.prepare("SELECT count(*) AS n FROM t").first("n") == 0


async def test_a_batch_is_one_transaction(db: D1Database) -> None:
    insert = db.prepare("INSERT INTO t (name) VALUES (?)")
    with pytest.raises(D1Error, match="NOT NULL"):
        await db.batch([insert.bind("kept?"), insert.bind(None)])
    assert await db.prepare("SELECT count(*) AS n FROM t").first("n") == 0  # the first was rolled back
    results = await db.batch([insert.bind("x"), insert.bind("y"), db.prepare("SELECT name FROM t ORDER BY id")])
    assert [r.meta.changes for r in results[:2]] == [1, 1] and [row.name for row in results[2].results] == ["x", "y"]


async def test_exec_runs_every_statement_and_counts_them(db: D1Database) -> None:
    done = await db.exec("INSERT INTO t (name) VALUES ('a');\nINSERT INTO t (name) VALUES ('b; c');\n")
    assert done.count == 2 and done["duration"] >= 0
    with pytest.raises(D1Error, match="^D1_EXEC_ERROR"):
        await db.exec("INSERT INTO nowhere VALUES (1);")


async def test_concurrent_writers_each_land_once(db: D1Database) -> None:
    insert = db.prepare("INSERT INTO t (name) VALUES (?)")
    results = await asyncio.gather(*(insert.bind(f"n{i}").run() for i in range(200)))
    assert sorted(r.meta.last_row_id for r in results) == list(range(1, 201))
    assert await db.prepare("SELECT count(DISTINCT name) AS n FROM t").first("n") == 200


async def test_statements_sharing_a_line_and_a_failed_migration_applied_whole_or_not_at_all(tmp_path: Path) -> None:
    from durable.d1 import migrations
    file = D1File(database_file(tmp_path, "m"))
    database = D1Database(file, "m")
    assert (await database.exec("CREATE TABLE a (x); INSERT INTO a VALUES (1); INSERT INTO a VALUES ('2;3');")).count == 3
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_ok.sql").write_text("CREATE TABLE b (y); INSERT INTO b VALUES (1);")
    (folder / "0002_bad.sql").write_text("INSERT INTO b VALUES (2);\nINSERT INTO nowhere VALUES (3);")
    with pytest.raises(Exception, match="no such table: nowhere"):
        await migrations.apply(file, folder, "d1_migrations")
    assert await database.prepare("SELECT count(*) AS n FROM b").first("n") == 1  # 0002's first insert undone
    assert [p.name for p in await migrations.unapplied(file, folder, "d1_migrations")] == ["0002_bad.sql"]
    (folder / "0002_bad.sql").write_text("INSERT INTO b VALUES (2);")
    assert [p.name for p in await migrations.apply(file, folder, "d1_migrations")] == ["0002_bad.sql"]
    assert await database.prepare("SELECT count(*) AS n FROM b").first("n") == 2
    await asyncio.to_thread(file.close)
