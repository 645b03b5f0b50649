"""The cluster storage engine against a real (embedded) MongoDB: a write made under one lease
never lands under another, and a node's cached object state never outlives its ownership."""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from durable import codec
from durable.errors import NotOwner
from durable.storage import DurableObjectStorage
from durable.storage.mongo import Fenced, MongoEngine

OBJ = "a" * 64
LEASE = "ns/0"


class Lease:
    """The node's view of its lease (what ClusterNode._fence answers), movable by the test."""

    def __init__(self, epoch: int) -> None:
        self.epoch: int | None = epoch

    def fence(self, object_id: str) -> tuple[str, int]:
        if self.epoch is None:
            raise Fenced("not held")
        return LEASE, self.epoch


@pytest.fixture
async def world(mongo_uri: str) -> Any:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    db = client[f"t_{uuid.uuid4().hex[:12]}"]
    await db["leases"].insert_one({"_id": LEASE, "owner": "me", "epoch": 1, "commits": 0})
    lease = Lease(1)
    engine = MongoEngine(db, "ns", node_id="me", leases="leases", fence_of=lease.fence, shard_of=lambda _: 0)
    await engine.prepare()
    yield db, lease, engine
    await engine.close()
    await client.close()


async def test_a_write_staged_under_an_old_epoch_does_not_land_under_a_new_one(world: Any, mongo_uri: str) -> None:
    db, lease, engine = world
    await engine.load(OBJ)
    storage = DurableObjectStorage(engine, OBJ)
    await storage.put("n", 1)
    await storage.sync()
    await storage.put("n", 2)  # staged while this node holds epoch 1 (its commit has not started)...
    # ...then, before the writer runs, the shard moves away and back: we hold epoch 3 now
    MongoClient(mongo_uri)[db.name]["leases"].update_one({"_id": LEASE}, {"$set": {"owner": "me", "epoch": 3}})
    lease.epoch = 3
    with pytest.raises(Fenced):
        await storage.sync()
    assert engine.refused_writes == 1
    engine.forget(OBJ)
    await engine.load(OBJ)
    assert await DurableObjectStorage(engine, OBJ).get("n") == 1  # only the write made under its lease


async def test_a_deposed_owner_s_commit_writes_nothing(world: Any) -> None:
    db, lease, engine = world
    await engine.load(OBJ)
    storage = DurableObjectStorage(engine, OBJ)
    await db["leases"].update_one({"_id": LEASE}, {"$set": {"owner": "other"}, "$inc": {"epoch": 1}})
    await storage.put("n", 7)  # this node still believes it holds epoch 1
    with pytest.raises(Fenced):
        await storage.sync()
    assert await db["do.ns.kv"].count_documents({}) == 0


async def test_state_read_before_a_drop_is_not_installed_after_it(world: Any) -> None:
    db, lease, engine = world
    started = asyncio.Event()
    find = engine._kv.find

    def slow_find(*args: Any, **kwargs: Any) -> Any:
        started.set()
        return find(*args, **kwargs)
    engine._kv.find = slow_find  # type: ignore[method-assign]
    load = asyncio.ensure_future(engine.load(OBJ))
    await started.wait()
    engine.forget(OBJ)  # the shard moved while the read was in flight
    with pytest.raises(NotOwner):  # nothing ran: the caller sends it to the new owner
        await load
    assert not engine.loaded(OBJ)


async def test_a_dropped_object_s_cached_state_goes_even_with_writes_pending(world: Any) -> None:
    db, lease, engine = world
    await engine.load(OBJ)
    storage = DurableObjectStorage(engine, OBJ)
    await storage.put("n", 1)  # not yet committed
    engine.forget(OBJ)
    assert not engine.loaded(OBJ)
    lease.epoch = None  # and the shard is gone: the pending write fails its fence
    with pytest.raises(Fenced):
        await storage.sync()


async def test_a_commit_the_database_refuses_is_a_retryable_refusal_and_reloads(world: Any,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A database error in the commit reaches the caller as a retryable ObjectUnavailable (a 503,
    never a 500), and the object's state is read afresh before it is used again."""
    from pymongo.errors import OperationFailure

    from durable.errors import ObjectUnavailable
    from durable.storage.mongo import StorageUnavailable

    db, lease, engine = world
    await engine.load(OBJ)
    storage = DurableObjectStorage(engine, OBJ)
    await storage.put("n", 1)
    await storage.sync()
    real = engine._kv.bulk_write

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("WriteConflict", code=112)

    monkeypatch.setattr(engine._kv, "bulk_write", refuse)
    await storage.put("n", 2)
    with pytest.raises(StorageUnavailable) as caught:
        await storage.sync()
    assert isinstance(caught.value, ObjectUnavailable) and not engine.loaded(OBJ)
    monkeypatch.setattr(engine._kv, "bulk_write", real)
    await engine.load(OBJ)
    assert await DurableObjectStorage(engine, OBJ).get("n") == 1


async def test_ids_stored_before_the_namespace_mark_are_moved_once(world: Any) -> None:
    from functools import partial

    from bson import Binary

    from durable import codec, ids

    db, _lease, engine = world
    key = ids.namespace_key("script", "Class")
    old = "b" * 64
    await db["do.ns.kv"].insert_one({"_id": f"{old}/n", "o": old, "k": "n", "v": Binary(codec.encode(7))})
    await db["do.ns.alarms"].insert_one({"_id": old, "s": 0, "at": 4102444800000})
    convert = partial(ids.remark, key)
    assert await engine.remark_ids(convert) == 1
    new = convert(old)
    assert new != old and new[:56] == old[:56] and convert(new) == new  # same body (same shard); idempotent
    await engine.load(new)
    assert await DurableObjectStorage(engine, new).get("n") == 7
    assert await db["do.ns.kv"].count_documents({"o": old}) == 0
    assert [doc["_id"] for doc in await db["do.ns.alarms"].find({}).to_list()] == [new]
    assert await engine.remark_ids(convert) == 0  # marked done: a later start converts nothing


async def test_an_onlooker_s_peek_reads_the_database_and_fills_no_cache(world: Any, mongo_uri: str) -> None:
    """The dashboard's read of an object live elsewhere: what is committed, and nothing kept that a
    later owner here would take for the object's state."""
    db, lease, engine = world
    await engine.load(OBJ)
    storage = DurableObjectStorage(engine, OBJ)
    await storage.put({"a": 1, "b": "two"})
    await storage.set_alarm(4_102_444_800_000)
    await storage.sync()
    engine.forget(OBJ)  # live on another node now
    rows, alarm = await engine.peek(OBJ, 10)
    assert [k for k, _ in rows] == ["a", "b"] and alarm == 4_102_444_800_000
    assert not engine.loaded(OBJ)
    # the owner elsewhere writes again: a load here (this node takes the shard) sees that write
    MongoClient(mongo_uri)[db.name]["do.ns.kv"].update_one({"_id": f"{OBJ}/a"}, {"$set": {"v": codec.encode(3)}})
    await engine.load(OBJ)
    assert await DurableObjectStorage(engine, OBJ).get("a") == 3

