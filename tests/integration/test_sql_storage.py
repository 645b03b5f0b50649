"""SQL storage (`ctx.storage.sql`) of SQLite-backed objects, through the real runtime and files."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durable import config as wconfig
from durable.runtime import Runtime
from durable.storage import sql as sql_storage
from tests.conftest import FIXTURES

CONFIG = FIXTURES / "cf_sql" / "wrangler.jsonc"


async def started(state: Path) -> Runtime:
    runtime = Runtime([wconfig.load(CONFIG)], persist_to=state)
    await runtime.start()
    return runtime


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await started(tmp_path / "state")
    yield rt
    await rt.close()


def ledger(rt: Runtime, name: str = "books"):
    return rt.workers["cf-sql"].env.LEDGER.getByName(name)


async def test_statements_cursors_and_rows(runtime: Runtime) -> None:
    books = ledger(runtime)
    assert await books.add("alice", 30) == 1  # rowsWritten
    await books.add("alice", 12)
    await books.add("bob", 5)
    assert await books.balance("alice") == {"balance": 42, "entries": 2}  # one(), row.attr and row["key"]
    assert await books.accounts() == {"columns": ["account", "total"], "rows": [["alice", 42], ["bob", 5]]}
    assert await books.size() > 0
    other = ledger(runtime, "other-books")  # each object has its own database
    assert await other.balance("alice") == {"balance": 0, "entries": 0}


async def test_transaction_sync_lands_whole_or_not_at_all(runtime: Runtime) -> None:
    books = ledger(runtime)
    await books.add("alice", 100)
    await books.transfer("alice", "bob", 40)
    with pytest.raises(Exception, match="refused midway"):
        await books.transfer("alice", "bob", 25, True)
    assert await books.balance("alice") == {"balance": 60, "entries": 2}
    assert await books.balance("bob") == {"balance": 40, "entries": 1}


async def test_read_then_write_is_exact_under_concurrent_calls(runtime: Runtime) -> None:
    books = ledger(runtime)
    results = await asyncio.gather(*(books.bump() for _ in range(300)))
    assert sorted(results) == list(range(1, 301))


@pytest.mark.parametrize("query, refused", [
    ("BEGIN", "transactionSync"), ("COMMIT", "transactionSync"), ("SAVEPOINT x", "transactionSync"),
    ("ATTACH DATABASE '/tmp/x.db' AS x", "not authorized"), ("PRAGMA journal_mode=DELETE", "not authorized"),
    ("CREATE TABLE _cf_mine (x)", "not authorized"), ("SELEKT 1", "syntax error"),
])
async def test_what_user_sql_may_not_do_is_a_clear_error(runtime: Runtime, query: str, refused: str) -> None:
    answer = await ledger(runtime).run(query)
    assert answer["error"] == "SqlError" and refused in answer["message"]
    assert (await ledger(runtime).run("PRAGMA table_info(entries)"))["rows"][0]["name"] == "id"  # reading is fine


async def test_classes_without_new_sqlite_classes_have_no_sql(runtime: Runtime) -> None:
    plain = runtime.workers["cf-sql"].env.PLAIN.getByName("p")
    sql, kv = await plain.sql_refusal()
    assert "new_sqlite_classes" in sql and "ctx.storage.kv" in kv and "new_sqlite_classes" in kv


async def test_the_synchronous_kv_api_of_sqlite_backed_objects(tmp_path: Path) -> None:
    rt = await started(tmp_path / "state")
    try:
        assert await ledger(rt).notes() == {"a": {"text": "first"}, "missing": None, "existed": True,
                                            "listed": [["note:a", "first"], ["note:b", "second"]],
                                            "reversed": ["note:b"]}
    finally:
        await rt.close()
    rt = await started(tmp_path / "state")  # what kv.put wrote is durable like any storage write
    try:
        assert await ledger(rt).note_keys() == ["note:a", "note:b"]
    finally:
        await rt.close()


async def test_delete_all_drops_every_table(runtime: Runtime) -> None:
    books = ledger(runtime)
    await books.add("alice", 1)
    assert await books.wipe() == []


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    rt = await started(tmp_path / "state")
    await ledger(rt).add("alice", 7)
    await rt.close()
    rt = await started(tmp_path / "state")
    try:
        assert await ledger(rt).balance("alice") == {"balance": 7, "entries": 1}
    finally:
        await rt.close()


async def test_the_reply_waits_until_the_write_is_on_disk(runtime: Runtime) -> None:
    """The output gate: while the log's fsync cannot run, the call that wrote does not return."""
    books = ledger(runtime)
    await books.balance("warm-up")  # the object exists and its table is durable
    release = threading.Event()
    blocker = sql_storage._FSYNC.submit(release.wait)  # the fsync thread is busy until released
    call = asyncio.ensure_future(books.add("alice", 3))
    done, _ = await asyncio.wait([call], timeout=0.5)
    assert not done  # written and committed, but not yet durable: the reply is held
    release.set()
    assert await call == 1
    await asyncio.wrap_future(blocker)


async def test_a_rename_migration_moves_the_data_and_a_delete_drops_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    rt = await started(state)
    await ledger(rt).add("alice", 9)
    await rt.workers["cf-sql"].env.PLAIN.getByName("p").remember("x")
    await rt.close()
    do_root = state / "v3" / "do"
    assert (do_root / "cf-sql-Plain").is_dir()
    rt = Runtime([wconfig.load(FIXTURES / "cf_sql_v2" / "wrangler.jsonc")], persist_to=state)
    await rt.start()
    try:
        assert await rt.workers["cf-sql"].env.BOOKS.getByName("books").total("alice") == 9
    finally:
        await rt.close()
    assert not (do_root / "cf-sql-Ledger").exists() and not (do_root / "cf-sql-Plain").exists()
    rt = Runtime([wconfig.load(FIXTURES / "cf_sql_v2" / "wrangler.jsonc")], persist_to=state)
    await rt.start()  # applied once: a second start moves nothing and keeps the data
    try:
        assert await rt.workers["cf-sql"].env.BOOKS.getByName("books").total("alice") == 9
    finally:
        await rt.close()


async def test_a_read_does_not_wait_for_the_disk(runtime: Runtime) -> None:
    """Only a transaction that wrote (rows, or the schema) is waited for by the output gate."""
    books = ledger(runtime)
    await books.add("alice", 3)
    release = threading.Event()
    blocker = sql_storage._FSYNC.submit(release.wait)  # no fsync can run meanwhile
    try:
        reading = asyncio.ensure_future(books.balance("alice"))
        done, _ = await asyncio.wait([reading], timeout=5)
        assert done and reading.result() == {"balance": 3, "entries": 1}
    finally:
        release.set()
        await asyncio.wrap_future(blocker)
