"""DurableObjectStorage on a real SQLite file: the key-value API, transactions, limits, reopen."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from durable import DataCloneError
from durable.storage import DurableObjectStorage, StorageEngine, _prefix_end


@pytest.fixture
async def engine(tmp_path: Path):
    eng = StorageEngine(tmp_path / "db.sqlite")
    yield eng
    await eng.close()


async def test_get_put_delete_single_and_many(engine: StorageEngine) -> None:
    s = DurableObjectStorage(engine, "obj")
    assert await s.get("missing") is None
    await s.put("a", {"x": [1, 2]})
    await s.put({"b": 2, "c": "three"})
    assert await s.get("a") == {"x": [1, 2]}
    assert await s.get(["a", "b", "zz"]) == {"a": {"x": [1, 2]}, "b": 2}
    assert await s.delete("a") is True
    assert await s.delete("a") is False
    assert await s.delete(["b", "c", "nope"]) == 2
    assert await s.list() == {}


async def test_values_are_copies(engine: StorageEngine) -> None:
    s = DurableObjectStorage(engine, "obj")
    value = {"items": [1]}
    await s.put("k", value)
    value["items"].append(2)
    got = await s.get("k")
    got["items"].append(3)
    assert await s.get("k") == {"items": [1]}


async def test_list_options(engine: StorageEngine) -> None:
    s = DurableObjectStorage(engine, "obj")
    await s.put({f"user:{i:02d}": i for i in range(10)} | {"order:1": "o", "zeta": "z"})
    await engine.flush()
    await s.put("user:05b", "uncommitted")  # uncommitted writes appear in listings too
    await s.delete("user:03")
    users = await s.list(prefix="user:")
    assert list(users) == ["user:00", "user:01", "user:02", "user:04", "user:05", "user:05b",
                           "user:06", "user:07", "user:08", "user:09"]
    assert list(await s.list(prefix="user:", limit=3)) == ["user:00", "user:01", "user:02"]
    assert list(await s.list(prefix="user:", limit=2, reverse=True)) == ["user:09", "user:08"]
    assert list(await s.list(start="user:07", end="user:09")) == ["user:07", "user:08"]
    assert list(await s.list(start_after="user:08", prefix="user:")) == ["user:09"]
    assert list(await s.list(limit=1)) == ["order:1"]


async def test_other_objects_are_invisible(engine: StorageEngine) -> None:
    a, b = DurableObjectStorage(engine, "a"), DurableObjectStorage(engine, "b")
    await a.put("k", 1)
    assert await b.get("k") is None and await b.list() == {}


async def test_transaction_commits_together_or_rolls_back(engine: StorageEngine) -> None:
    s = DurableObjectStorage(engine, "obj")
    await s.put("balance", 10)

    async def move(txn):
        await txn.put("balance", (await txn.get("balance")) - 3)
        await txn.put("log", ["-3"])
        assert await txn.get("balance") == 7
        assert list(await txn.list()) == ["balance", "log"]
        return "done"
    assert await s.transaction(move) == "done"
    assert await s.get(["balance", "log"]) == {"balance": 7, "log": ["-3"]}

    async def failing(txn):
        await txn.put("balance", 0)
        raise RuntimeError("declined")
    with pytest.raises(RuntimeError):
        await s.transaction(failing)

    async def rolled_back(txn):
        await txn.delete("balance")
        txn.rollback()
    await s.transaction(rolled_back)
    assert await s.get("balance") == 7


async def test_delete_all_and_alarm(engine: StorageEngine) -> None:
    s = DurableObjectStorage(engine, "obj")
    await s.put({"a": 1, "b": 2})
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    await s.set_alarm(when)
    assert await s.get_alarm() == int(when.timestamp() * 1000)
    await s.delete_all()
    assert await s.list() == {} and await s.get_alarm() is None


async def test_limits_and_bad_values_are_clear_errors(engine: StorageEngine) -> None:
    s = DurableObjectStorage(engine, "obj")
    with pytest.raises(DataCloneError, match="value for storage key 'k' could not be serialized"):
        await s.put("k", {1, 2})
    with pytest.raises(TypeError, match="storage keys are str"):
        await s.put(7, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="longer than 2048 bytes"):
        await s.put("k" * 3000, 1)
    with pytest.raises(ValueError, match="at most 128 keys"):
        await s.get([str(i) for i in range(129)])
    with pytest.raises(ValueError, match="limit is"):
        await s.put("big", b"x" * (3 * 1024 * 1024))
    with pytest.raises(DataCloneError):
        await s.put({"ok": 1, "bad": object()})
    assert await s.get("ok") is None  # a multi-put is all or nothing


async def test_committed_data_survives_reopen(tmp_path: Path) -> None:
    engine = StorageEngine(tmp_path / "db.sqlite")
    s = DurableObjectStorage(engine, "obj")
    await s.put({"a": 1, "b": datetime(2026, 1, 2, tzinfo=timezone.utc)})
    await s.set_alarm(123456)
    await engine.close()
    reopened = StorageEngine(tmp_path / "db.sqlite")
    s2 = DurableObjectStorage(reopened, "obj")
    assert await s2.get(["a", "b"]) == {"a": 1, "b": datetime(2026, 1, 2, tzinfo=timezone.utc)}
    assert reopened.all_alarms() == [("obj", 123456)]
    await reopened.close()


async def test_concurrent_writes_are_group_committed(engine: StorageEngine) -> None:
    storages = [DurableObjectStorage(engine, f"o{i}") for i in range(100)]
    for i, s in enumerate(storages):
        await s.put("k", i)
    await engine.flush()
    assert engine.commits < 100  # one SQLite transaction carried many objects' writes


def test_prefix_end() -> None:
    assert _prefix_end("user:") == "user;"
    assert _prefix_end("a\U0010ffff") == "b"
    assert _prefix_end("\ud7ff") == "\ue000"
