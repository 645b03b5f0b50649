"""Object storage in MongoDB: the cluster back end, so a shard's objects can move between nodes.

Per namespace, `do.<script>.<Class>.kv` holds one document per key (`o` object, `k` key, `v`
value) and `do.<script>.<Class>.alarms` one per armed alarm (`s` shard, `at` ms). An object's
whole state is read once when it becomes live on a node (reads then never leave the event
loop, as with SQLite), and each group of writes is one multi-document transaction that first
touches the lease document of every shard it writes, matching this node's epoch: a node that
lost a shard matches nothing, writes nothing, and only those objects' waiters fail.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bson import Binary
from pymongo import DeleteMany, DeleteOne, ReplaceOne, WriteConcern
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from .. import deadline
from ..errors import NotOwner, ObjectUnavailable, register_error
from .batch import UNSET, KeyRange, ObjectBatch
from .engine import CommitFailed, Engine

MAJORITY = WriteConcern("majority")


@register_error
class Fenced(CommitFailed, ObjectUnavailable):
    """This node no longer holds the shard's lease at the epoch it committed under: nothing was
    written; the caller may retry (its call will reach the new owner)."""


@register_error
class StorageUnavailable(CommitFailed, ObjectUnavailable):
    """The database refused the commit or its outcome is unknown (down, a conflict it would not
    retry): the caller may retry; the objects are read afresh from the database first."""


# a load or a commit waits no longer than this, nor than the request that caused it has left (a
# node cut off from the database answers 503 instead of holding its callers for the partition)
OPERATION_TIMEOUT_S = 10.0

# object id → (lease document id, epoch this node holds it at); raises if the node holds none
FenceOf = Callable[[str], "tuple[str, int]"]


class MongoEngine(Engine):
    """One namespace's objects in MongoDB, each commit fenced by the shards' lease epochs."""
    kind = "MongoDB"  # what onlookers are told it stores in

    def __init__(self, db: AsyncDatabase, namespace: str, *, node_id: str, leases: str,
                 fence_of: FenceOf, shard_of: Callable[[str], int],
                 on_fenced: Callable[[set[str]], None] | None = None,
                 before_transaction: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self._db = db
        self._kv = db.get_collection(f"do.{namespace}.kv", write_concern=MAJORITY)
        self._alarms = db.get_collection(f"do.{namespace}.alarms", write_concern=MAJORITY)
        self._leases = db.get_collection(leases, write_concern=MAJORITY)
        self._node_id = node_id
        self._fence_of = fence_of
        self._shard_of = shard_of
        self._on_fenced = on_fenced
        self._before_transaction = before_transaction  # the cluster records each session it commits in
        self._objects: dict[str, dict[str, bytes]] = {}  # committed state of live objects
        self._alarm: dict[str, int] = {}  # committed alarms of live objects and owned shards
        self._staged_under: dict[str, tuple[str, int] | BaseException] = {}  # object → fence at staging
        self._loading: dict[str, list[int]] = {}  # object → [forgets seen, loads in flight] (see load)

    def __repr__(self) -> str:
        return f"<MongoEngine {self.namespace}>"

    async def prepare(self) -> None:
        await self._kv.create_index("o")
        await self._alarms.create_index("s")

    async def remark_ids(self, convert: Callable[[str], str]) -> int:
        """Rewrites each stored document under its object's new id (new first, then the old one
        goes: a run cut short is finished by the next node to start)."""
        meta = self._db.get_collection("do.meta", write_concern=MAJORITY)
        if await meta.find_one({"_id": self.namespace, "idFormat": {"$gte": 1}}) is not None:
            return 0
        moved: set[str] = set()
        async for doc in self._kv.find({}):
            new = convert(doc["o"])
            if new != doc["o"]:
                await self._kv.replace_one({"_id": f"{new}/{doc['k']}"}, {"o": new, "k": doc["k"], "v": doc["v"]},
                                           upsert=True)
                await self._kv.delete_one({"_id": doc["_id"]})
                moved.add(new)
        async for doc in self._alarms.find({}):
            new = convert(doc["_id"])
            if new != doc["_id"]:
                await self._alarms.replace_one({"_id": new}, {"s": doc["s"], "at": doc["at"]}, upsert=True)
                await self._alarms.delete_one({"_id": doc["_id"]})
        await meta.update_one({"_id": self.namespace}, {"$set": {"idFormat": 1}}, upsert=True)
        return len(moved)

    # -- objects coming and going --------------------------------------------------------
    async def load(self, object_id: str) -> None:
        if object_id in self._objects:
            return
        start = self._loading.setdefault(object_id, [0, 0])
        start[1] += 1  # loads in flight
        seen = start[0]  # forgets so far
        try:
            with deadline.database(OPERATION_TIMEOUT_S):
                state = {doc["k"]: bytes(doc["v"])
                         async for doc in self._kv.find({"o": object_id}, {"k": 1, "v": 1})}
                alarm = await self._alarms.find_one({"_id": object_id})
        finally:
            start[1] -= 1
            if start[1] == 0:
                self._loading.pop(object_id, None)
        if start[0] != seen:  # dropped meanwhile (its shard moved): what we read may predate the move;
            # nothing ran yet, so the caller may send it to the new owner
            raise NotOwner(f"{self.namespace}: object {object_id[:12]} moved while it was being loaded")
        if object_id not in self._objects:  # another event loaded it while we awaited
            self._objects[object_id] = state
            if alarm is not None:
                self._alarm[object_id] = int(alarm["at"])

    def stage(self, object_id: str) -> ObjectBatch:
        """Note the lease the write is made under: it commits under that epoch or not at all (a
        write staged before a shard moved away must not land if the shard comes back)."""
        if object_id not in self._pending:
            try:
                self._staged_under[object_id] = self._fence_of(object_id)
            except Exception as exc:
                self._staged_under[object_id] = exc
        return super().stage(object_id)

    def forget(self, object_id: str) -> None:
        """The object left this node (or its state is suspect): its cached state goes at once, and
        a load in flight will not install what it read; pending writes will fail their fence."""
        self._objects.pop(object_id, None)
        self._alarm.pop(object_id, None)
        if object_id in self._loading:
            self._loading[object_id][0] += 1

    def loaded(self, object_id: str) -> bool:
        return object_id in self._objects

    async def shard_alarms(self, shard: int) -> list[tuple[str, int]]:
        """The armed alarms of one shard (read by its new owner, which then runs them)."""
        found = [(doc["_id"], int(doc["at"])) async for doc in self._alarms.find({"s": shard})]
        for object_id, at in found:
            if not self.has_uncommitted(object_id):
                self._alarm[object_id] = at
        return found

    async def alarmed_shards(self) -> list[int]:
        return [int(s) for s in await self._alarms.distinct("s")]

    # -- commits ---------------------------------------------------------------------------
    async def _commit(self, batch: dict[str, ObjectBatch]) -> dict[str, BaseException]:
        fences, failed = self._fences(batch)
        self.refused_writes += len(failed)
        if not fences:
            return failed
        lost: set[str] = set()

        async def transaction(session: AsyncClientSession) -> dict[str, BaseException]:
            refused: dict[str, BaseException] = {}
            lost.clear()
            for (lease_id, epoch), object_ids in fences.items():
                held = await self._leases.update_one({"_id": lease_id, "owner": self._node_id, "epoch": epoch},
                                                     {"$inc": {"commits": 1}}, session=session)
                if held.matched_count == 0:
                    error = Fenced(f"{self.namespace}: shard lease {lease_id} is no longer held at epoch {epoch}")
                    refused.update((object_id, error) for object_id in object_ids)
                    lost.add(lease_id)
            kv_ops, alarm_ops = self._operations(batch, skip=refused.keys() | failed.keys())
            if kv_ops:
                await self._kv.bulk_write(kv_ops, ordered=True, session=session)
            if alarm_ops:
                await self._alarms.bulk_write(alarm_ops, ordered=True, session=session)
            return refused

        try:
            with deadline.database(OPERATION_TIMEOUT_S):
                async with self._db.client.start_session() as session:
                    if self._before_transaction is not None:
                        await self._before_transaction(session.session_id)
                    refused = await session.with_transaction(transaction, write_concern=MAJORITY)
        except PyMongoError as exc:  # a retryable refusal, not a crash; what landed is re-read
            for object_ids in fences.values():
                for object_id in object_ids:
                    self.forget(object_id)
            raise StorageUnavailable(f"{self.namespace}: the commit failed ({type(exc).__name__}: {exc})") from None
        if refused:
            self.refused_writes += len(refused)
            if self._on_fenced is not None:
                self._on_fenced(lost)
        failed.update(refused)
        for object_id, ob in batch.items():
            if object_id not in failed:
                self._apply(object_id, ob)
        return failed

    def _fences(self, batch: dict[str, ObjectBatch]) -> tuple[dict[tuple[str, int], list[str]], dict[str, BaseException]]:
        """The objects of `batch` by the shard lease (and epoch) each commits under; the ones whose
        writes were staged under another lease (moved meanwhile) fail, as Fenced."""
        fences: dict[tuple[str, int], list[str]] = {}
        failed: dict[str, BaseException] = {}
        for object_id in batch:
            fence = self._staged_under.pop(object_id, None)
            try:
                current = self._fence_of(object_id)
                if isinstance(fence, BaseException):
                    raise fence
                if fence is not None and fence != current:
                    raise Fenced(f"{self.namespace}: written under lease {fence}, now {current}")
                fences.setdefault(current, []).append(object_id)
            except Exception as exc:  # noqa: BLE001 - it fails this object's writes, not the batch
                failed[object_id] = exc
        return fences, failed

    def _operations(self, batch: dict[str, ObjectBatch], skip: Any) -> tuple[list[Any], list[Any]]:
        """The key-value and alarm writes of `batch`, but for the objects in `skip`."""
        kv_ops: list[Any] = []
        alarm_ops: list[Any] = []
        for object_id, ob in batch.items():
            if object_id in skip:
                continue
            if ob.clear:
                kv_ops.append(DeleteMany({"o": object_id}))
            for key, value in ob.writes.items():
                doc_id = f"{object_id}/{key}"
                if value is None:
                    kv_ops.append(DeleteOne({"_id": doc_id}))
                else:
                    kv_ops.append(ReplaceOne({"_id": doc_id}, {"o": object_id, "k": key, "v": Binary(value)},
                                             upsert=True))
            if ob.alarm is None:
                alarm_ops.append(DeleteOne({"_id": object_id}))
            elif ob.alarm is not UNSET:
                alarm_ops.append(ReplaceOne({"_id": object_id}, {"s": self._shard_of(object_id), "at": ob.alarm},
                                            upsert=True))
        return kv_ops, alarm_ops

    def _apply(self, object_id: str, ob: ObjectBatch) -> None:
        state = self._objects.get(object_id)
        if state is not None:
            if ob.clear:
                state.clear()
            for key, value in ob.writes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        if ob.alarm is None:
            self._alarm.pop(object_id, None)
        elif ob.alarm is not UNSET:
            self._alarm[object_id] = ob.alarm

    # -- committed reads (of loaded objects: the host loads before an object runs) ---------------
    def _state(self, object_id: str) -> dict[str, bytes]:
        state = self._objects.get(object_id)
        if state is None:  # never loaded, or dropped under a running event (its shard moved)
            raise Fenced(f"{self.namespace}: object {object_id[:12]} is not live on this node")
        return state

    def _committed_read(self, object_id: str, key: str) -> bytes | None:
        return self._state(object_id).get(key)

    def _committed_list(self, object_id: str, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
        items = sorted(((k, v) for k, v in self._state(object_id).items() if k in rng), reverse=reverse)
        return items if limit is None else items[:limit]

    def _committed_alarm(self, object_id: str) -> int | None:
        return self._alarm.get(object_id)

    def all_alarms(self) -> list[tuple[str, int]]:
        return []  # alarms are adopted shard by shard, by the node that owns the shard

    async def peek(self, object_id: str, limit: int) -> tuple[list[tuple[str, bytes]], int | None]:
        """Live here: what it reads. Elsewhere: what is committed in the database, read without
        `load` (whose cache would outlive the owner's next commit and serve it stale here later)."""
        if self.loaded(object_id):
            return await super().peek(object_id, limit)
        rows = [(doc["k"], bytes(doc["v"])) async for doc in
                self._kv.find({"o": object_id}, {"k": 1, "v": 1}).sort("k", 1).limit(limit)]
        alarm = await self._alarms.find_one({"_id": object_id}, {"at": 1})
        return rows, None if alarm is None else int(alarm["at"])

    async def _close_backend(self) -> None:
        self._objects.clear()

