"""A cluster node leaving gracefully, against a real (embedded) MongoDB: each shard is handed
off as soon as its own calls are done, never held back by another shard's call still under way
(such a call may be waiting for exactly that shard's new owner)."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from durable import DurableObject
from durable.cluster import node as node_module
from durable.cluster.node import ClusterNode, ClusterSettings
from durable.cluster.placement import lease_id
from durable.errors import NotOwner
from durable.ids import id_from_name
from durable.objects import ObjectHost
from tests.polling import eventually

SCRIPT = "w"
NAMESPACE = f"{SCRIPT}.Parked"
KEY = b"departure-test-namespace"


class Parked(DurableObject):
    """`wait` stays in flight until the test opens the object's gate; `touch` returns at once."""

    gates: ClassVar[dict[str, asyncio.Event]] = {}

    async def wait(self, name: str) -> str:
        await self.gates.setdefault(name, asyncio.Event()).wait()
        return name

    async def touch(self) -> str:
        await self.ctx.storage.put("touched", True)
        return "ok"


@pytest.fixture
async def leaving(mongo_uri: str, monkeypatch: Any) -> AsyncIterator[tuple[ClusterNode, ObjectHost]]:
    """A one-node cluster hosting `Parked` objects, stopped at the end of the test."""
    monkeypatch.setattr(node_module, "DRAIN_TIMEOUT_S", 60.0)  # only the calls themselves may hold a shard
    Parked.gates.clear()
    node = ClusterNode(ClusterSettings(uri=mongo_uri, database=f"t_{uuid.uuid4().hex[:12]}", node_id="leaving",
                                       lease_s=2.0, urls={SCRIPT: "http://127.0.0.1:9"}))
    engine = node.storage(SCRIPT, "Parked")
    host = ObjectHost(Parked, None, engine, script_name=SCRIPT, class_name="Parked")
    node.attach(SCRIPT, host, engine)
    await node.start()
    try:
        yield node, host
    finally:
        Parked.gates.setdefault("busy", asyncio.Event()).set()
        await host.close()
        await node.stop()


async def test_a_leaving_node_hands_each_shard_off_once_its_own_calls_are_done(leaving: Any) -> None:
    node, host = leaving
    busy_id = id_from_name(KEY, "busy")
    idle_id = next(object_id for object_id in (id_from_name(KEY, f"idle-{i}") for i in range(100))
               if node.shard(str(object_id)) != node.shard(str(busy_id)))
    busy_shard, idle_shard = node.shard(str(busy_id)), node.shard(str(idle_id))
    leases = node.leases.collection
    await host.guard(busy_id)  # type: ignore[misc]  # the busy shard is taken first
    call = asyncio.ensure_future(host.invoke(busy_id, "wait", ["busy"], {}))
    await host.guard(idle_id)  # type: ignore[misc]
    assert await host.invoke(idle_id, "touch", [], {}) == "ok"
    assert list(node.owned) == [(NAMESPACE, busy_shard), (NAMESPACE, idle_shard)]

    departing = asyncio.ensure_future(node.depart())

    async def idle_shard_released() -> bool:
        doc = await leases.find_one({"_id": lease_id(NAMESPACE, idle_shard)})
        return doc is not None and doc["owner"] is None

    assert await eventually(idle_shard_released, 10)  # while the other shard is still busy
    busy = await leases.find_one({"_id": lease_id(NAMESPACE, busy_shard)})
    assert busy is not None and busy["owner"] == "leaving" and not call.done()
    Parked.gates.setdefault("busy", asyncio.Event()).set()
    assert await call == "busy"  # the call under way finished on this node
    await asyncio.wait_for(departing, 10)
    busy = await leases.find_one({"_id": lease_id(NAMESPACE, busy_shard)})
    assert busy is not None and busy["owner"] is None and not node.owned


async def test_a_leaving_node_takes_no_new_shard(leaving: Any) -> None:
    """Its own view may still place a shard on it (it stopped re-reading the members), and a
    caller's may too: it answers NotOwner, so the call goes to the node that will own it."""
    node, host = leaving
    held = id_from_name(KEY, "held")
    await host.guard(held)  # type: ignore[misc]
    other = next(object_id for object_id in (id_from_name(KEY, f"other-{i}") for i in range(100))
                 if node.shard(str(object_id)) != node.shard(str(held)))
    leaving_now = asyncio.ensure_future(node.depart())
    await asyncio.sleep(0)  # it has begun (it is handing off, then stays up a beat and a half)
    with pytest.raises(NotOwner):
        await host.guard(other)  # type: ignore[misc]
    await asyncio.wait_for(leaving_now, 10)
    with pytest.raises(NotOwner):
        await host.guard(other)  # type: ignore[misc]
    assert await node.leases.collection.find_one({"_id": lease_id(NAMESPACE, node.shard(str(other)))}) is None
    assert not node.owned
