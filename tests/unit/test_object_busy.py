"""`ObjectHost.busy`, which a cluster node's shard hand-off waits on: a call the guard let in
counts from that moment, also while its object is still being loaded, so the shard cannot move
under it (it would run on a node that no longer owns it and fail at commit: a 503 for a client
during a graceful leave)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from durable import DurableObject
from durable.ids import id_from_name
from durable.objects import ObjectHost
from durable.storage.sqlite import StorageEngine


class SlowToLoad(StorageEngine):
    """A back end whose object loads wait until the test lets them through (as a database read does)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.loading = asyncio.Event()
        self.release = asyncio.Event()
        self.forgotten: list[str] = []

    async def load(self, object_id: str) -> None:
        self.loading.set()
        await self.release.wait()

    def forget(self, object_id: str) -> None:
        self.forgotten.append(object_id)


class Counter(DurableObject):
    async def bump(self) -> int:
        value = (await self.ctx.storage.get("n") or 0) + 1
        await self.ctx.storage.put("n", value)
        return value


async def test_a_call_still_loading_its_object_is_busy_until_it_finished(tmp_path: Path) -> None:
    engine = SlowToLoad(tmp_path / "db.sqlite")
    host = ObjectHost(Counter, None, engine, script_name="w", class_name="Counter")
    object_id = id_from_name(b"counter-namespace", "a")
    everything = lambda key: True
    try:
        assert not host.busy(everything)
        call = asyncio.ensure_future(host.invoke(object_id, "bump", [], {}))
        await engine.loading.wait()
        assert host.busy(everything)  # not yet live, not yet in flight: still busy
        assert not host.busy(lambda key: key != str(object_id))
        engine.release.set()
        assert await call == 1
        assert not host.busy(everything)
    finally:
        await host.close()


async def test_dropping_a_shard_forgets_an_object_still_being_loaded(tmp_path: Path) -> None:
    """Its load must not install state read before the move (the engine raises Fenced then)."""
    engine = SlowToLoad(tmp_path / "db.sqlite")
    host = ObjectHost(Counter, None, engine, script_name="w", class_name="Counter")
    object_id = id_from_name(b"counter-namespace", "a")
    try:
        call = asyncio.ensure_future(host.invoke(object_id, "bump", [], {}))
        await engine.loading.wait()
        host.drop_objects(lambda key: True)
        assert engine.forgotten == [str(object_id)]
        engine.release.set()
        await call
    finally:
        await host.close()
