"""A cluster node: membership, the shards it owns, hand-off, and the guard every call passes.

A node is one runtime process (one or more workers) joined to a cluster whose coordination
store is a MongoDB database. It owns a shard of a namespace after taking its lease (lazily, on
the first call routed to it, or at once when the shard has armed alarms); it gives a shard up
when rendezvous hashing moves it to another member (a node joined) or when it stops, and drops
everything when its own membership lapses (paused, partitioned, database unreachable).
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from ..errors import NotOwner
from ..observe import metrics
from ..storage.mongo import MongoEngine
from .leases import ShardLeases
from .membership import SELF_MARGIN, Heart, Member, Membership
from .placement import DEFAULT_SHARDS, lease_id, owner_of, shard_of
from .suspicion import Suspicion

if TYPE_CHECKING:
    from ..objects import ObjectHost

log = logging.getLogger("durable.cluster")

DRAIN_TIMEOUT_S = 5.0
RECENT_KEPT = 100  # shard events kept for onlookers (the dashboard)


@dataclass
class ClusterSettings:
    """How a node joins: the coordination database, its own identity and the lease timing."""

    uri: str
    database: str = "durable_cluster"
    node_id: str = ""
    lease_s: float = 6.0
    shards: int = DEFAULT_SHARDS
    urls: dict[str, str] = field(default_factory=dict)  # worker → URL this node serves it on
    internal_urls: dict[str, str] = field(default_factory=dict)  # worker → its internal listener, if apart
    version: str = ""  # the code this node runs (each member shows the others' in /health)

    @property
    def beat_s(self) -> float:
        return self.lease_s / 4


@dataclass
class _Namespace:
    name: str
    script: str
    host: ObjectHost
    engine: MongoEngine
    before_join: Callable[[], Awaitable[Any]] | None = None  # a stored-data migration, run as the node joins


class ClusterNode:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self.node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        # no command on the coordination database may wait longer than a lease (a silent partition)
        self.client: AsyncMongoClient = AsyncMongoClient(settings.uri, serverSelectionTimeoutMS=3000,
                                                         connectTimeoutMS=3000,
                                                         socketTimeoutMS=int(max(settings.lease_s, 3.0) * 1000))
        self.db = self.client[settings.database]
        self.membership = Membership(self.db["nodes"], self.node_id, settings.urls, settings.lease_s,
                                     settings.internal_urls, code_version=settings.version)
        self.leases = ShardLeases(self.db["leases"], self.node_id, before_takeover=self.membership.end_sessions_of)
        self.namespaces: dict[str, _Namespace] = {}
        self.owned: dict[tuple[str, int], int] = {}  # (namespace, shard) → epoch held
        self._acquiring: dict[tuple[str, int], asyncio.Future[int | None]] = {}
        self._draining: set[tuple[str, int]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._departed = False
        self._joining: asyncio.Task[None] | None = None  # joining in the background (the database was away)
        self._heart: Heart | None = None
        self.handoffs = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_KEPT)  # shards taken and lost here, newest last
        self.fenced = 0
        self.suspicion = Suspicion(self.node_id, self.membership.suspect, self.refresh)

    # -- wiring ----------------------------------------------------------------------------
    def storage(self, script: str, class_name: str) -> MongoEngine:
        name = f"{script}.{class_name}"
        return MongoEngine(self.db, name, node_id=self.node_id, leases=self.leases.collection.name,
                           fence_of=lambda object_id: self._fence(name, object_id),
                           shard_of=lambda object_id: shard_of(object_id, self.settings.shards),
                           on_fenced=self._fenced, before_transaction=self.membership.record_session)

    def attach(self, script: str, host: ObjectHost, engine: MongoEngine,
               before_join: Callable[[], Awaitable[Any]] | None = None) -> None:
        name = f"{script}.{host.class_name}"
        self.namespaces[name] = _Namespace(name, script, host, engine, before_join)
        for counter in (metrics.CLUSTER_LEASES, metrics.CLUSTER_HANDOFFS, metrics.CLUSTER_LEASE_LOSSES):
            counter.labels(name)  # at 0 from the start: Prometheus's increase() cannot see a series' first sample
        host.guard = lambda object_id: self.ensure_owned(name, str(object_id))

    async def start(self) -> None:
        """Join the cluster. With the coordination database away, keep trying in the background:
        the node serves meanwhile (its probes answer; it is no member, so calls to its objects are
        retryable 503s) and joins as soon as the database answers."""
        try:
            await self._join()
        except PyMongoError as exc:
            log.warning("cluster: cannot join yet (%s); trying again in the background", type(exc).__name__,
                        extra={"event": "join_deferred"})
            self._joining = asyncio.get_running_loop().create_task(self._join_when_possible())

    async def _join(self) -> None:
        for ns in self.namespaces.values():
            if ns.before_join is not None:
                await ns.before_join()
            await ns.engine.prepare()
        await self.membership.beat()
        await self._adopt_alarmed_shards()
        self._heart = Heart(self.settings.uri, self.settings.database, self.node_id, self.settings.beat_s,
                            self.settings.lease_s * SELF_MARGIN, self.membership.acknowledged)
        self._heart.start()
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    @property
    def joined(self) -> bool:
        """Has this node joined (it may have lapsed since), or is it still waiting for its database?"""
        return self._loop_task is not None

    async def _join_when_possible(self) -> None:
        delay = 0.5
        while not self._departed:
            await asyncio.sleep(delay)
            try:
                await self._join()
            except PyMongoError as exc:
                delay = min(delay * 2, self.settings.lease_s)
                log.warning("cluster: cannot join yet (%s); next try in %.1f s", type(exc).__name__, delay)
                continue
            log.info("cluster: joined as %s", self.node_id, extra={"event": "joined"})
            return

    async def _stop_rounds(self) -> None:
        """No more joining, beats or hand-off rounds from here on."""
        for task in (self._joining, self._loop_task):
            if task is not None:
                task.cancel()
        await self._stop_heart()

    async def _stop_heart(self) -> None:
        if self._heart is not None:
            await asyncio.to_thread(self._heart.stop)
            self._heart = None

    # -- placement -------------------------------------------------------------------------
    def shard(self, object_id: str) -> int:
        return shard_of(object_id, self.settings.shards)

    def owner(self, script: str, namespace: str, object_id: str) -> Member | None:
        winner = self.winner(script, namespace, self.shard(object_id))
        return None if winner is None else self.membership.members.get(winner)

    def winner(self, script: str, namespace: str, shard: int) -> str | None:
        """The node rendezvous places this shard on, among the live members serving `script`."""
        return owner_of(lease_id(namespace, shard), self.membership.live_ids(script))

    async def refresh(self) -> None:
        try:
            await self.membership.refresh()
        except PyMongoError as exc:
            log.warning("cluster: cannot re-read members: %s", exc)

    async def ensure_owned(self, namespace: str, object_id: str) -> None:
        """Pass if this node holds the object's shard now; take the lease if it should; else NotOwner."""
        key = (namespace, self.shard(object_id))
        if key in self.owned and key not in self._draining and self.membership.valid:
            return
        if not self.membership.valid:
            raise NotOwner(f"node {self.node_id} is not a live member right now")
        if key in self._draining:
            raise NotOwner(f"{namespace} shard {key[1]} is moving away from {self.node_id}")
        if self._departed:  # leaving: what it held is being handed off, and it takes nothing new
            raise NotOwner(f"node {self.node_id} is leaving the cluster")
        ns = self.namespaces[namespace]
        owner = self.owner(ns.script, namespace, object_id)
        if owner is None or owner.node_id != self.node_id:
            raise NotOwner(f"{namespace} shard {key[1]} belongs to another node")
        if await self._take(key) is None:
            raise NotOwner(f"{namespace} shard {key[1]} is still held by another live node")

    async def _take(self, key: tuple[str, int]) -> int | None:
        """Acquire the shard's lease, once however many callers ask at the same time."""
        pending = self._acquiring.get(key)
        if pending is None:
            pending = self._acquiring[key] = asyncio.ensure_future(self._acquire(key))
            pending.add_done_callback(lambda _: self._acquiring.pop(key, None))
        return await asyncio.shield(pending)

    async def _acquire(self, key: tuple[str, int]) -> int | None:
        namespace, shard = key
        ns = self.namespaces[namespace]
        # a node that left a moment ago is still handing its shards off (its calls in flight
        # finish, its writes land, then it releases each lease): wait for that, do not take over
        handing_off = {node_id for node_id, age in self.membership.departed.items()
                       if age < self.settings.lease_s + DRAIN_TIMEOUT_S}
        epoch = await self.leases.acquire(lease_id(namespace, shard), set(self.membership.live_ids()) | handing_off)
        if epoch is None:
            return None
        if self._departed:  # it began to leave while the lease was being taken: give it straight back
            try:
                await self.leases.release(lease_id(namespace, shard), epoch)
            except PyMongoError as exc:  # it lapses by itself a lease from now
                log.warning("cluster: could not give back %s shard %d on the way out: %s", namespace, shard, exc)
            return None
        self.owned[key] = epoch
        self._note("took", namespace, shard, epoch)
        metrics.CLUSTER_LEASES.labels(namespace).inc()
        log.info("cluster: %s took %s shard %d at epoch %d", self.node_id, namespace, shard, epoch,
                 extra={"event": "shard_acquired", "namespace": namespace, "shard": shard, "epoch": epoch})
        ns.host.adopt_alarms(await ns.engine.shard_alarms(shard))
        return epoch

    def _fence(self, namespace: str, object_id: str) -> tuple[str, int]:
        shard = self.shard(object_id)
        epoch = self.owned.get((namespace, shard))
        if epoch is None:
            raise NotOwner(f"{namespace} shard {shard} is not held by {self.node_id}")
        return lease_id(namespace, shard), epoch

    def _fenced(self, lease_ids: set[str]) -> None:
        """A commit was refused: another node took these shards. Forget them and their objects."""
        self.fenced += 1
        metrics.CLUSTER_FENCED.inc()
        for lid in lease_ids:
            namespace, _, shard = lid.rpartition("/")
            self._drop((namespace, int(shard)), "fenced: another node holds the lease now")

    def _note(self, event: str, namespace: str, shard: int, epoch: int, reason: str = "") -> None:
        self.recent.append({"at": time.time(), "event": event, "namespace": namespace, "shard": shard,
                            "epoch": epoch, "reason": reason})

    def _drop(self, key: tuple[str, int], reason: str, handed_off: bool = False) -> None:
        namespace, shard = key
        epoch = self.owned.pop(key, None)
        if epoch is not None:
            self._note("handed off" if handed_off else "lost", namespace, shard, epoch, reason)
            (metrics.CLUSTER_HANDOFFS if handed_off else metrics.CLUSTER_LEASE_LOSSES).labels(namespace).inc()
            log.warning("cluster: %s lost %s shard %d (%s)", self.node_id, namespace, shard, reason,
                        extra={"event": "shard_lost", "namespace": namespace, "shard": shard})
        ns = self.namespaces[namespace]
        ns.host.drop_objects(lambda object_id: self.shard(object_id) == shard)

    # -- the beat loop: membership, hand-off, alarms ----------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.beat_s)
            self._drop_all_if_lapsed()  # resumed after a pause: forget all before beating again
            try:
                version = self.membership.version
                await self.membership.beat()
                await self.suspicion.renew()
                await self._hand_off()
                if self.membership.version != version or self.membership.beats % 4 == 0:
                    await self._adopt_alarmed_shards()
            except PyMongoError as exc:
                log.warning("cluster: beat failed: %s", exc, extra={"event": "beat_failed"})
            except Exception:  # the loop must outlive any one bad round
                log.exception("cluster: beat round failed")
            self._drop_all_if_lapsed()

    def _drop_all_if_lapsed(self) -> None:
        """Past our own lease (now, or at any moment since the last look: a pause), another node
        may own our shards: nothing in memory is to be trusted."""
        lapsed = self.membership.take_lapse()
        if (lapsed or not self.membership.valid) and self.owned:
            for key in list(self.owned):
                self._drop(key, "this node's membership lapsed")

    async def _hand_off(self) -> None:
        """Give up the shards rendezvous now places on another live member (one that joined).
        One at a time: handing many off at once let writes of calls in flight meet a dropped
        shard (NotOwner reaching a client under load)."""
        for key, epoch in list(self.owned.items()):
            namespace, shard = key
            winner = self.winner(self.namespaces[namespace].script, namespace, shard)
            if winner is None or winner == self.node_id:
                continue
            await self._give_up(key, epoch, f"handed off to {winner}")

    async def _give_up(self, key: tuple[str, int], epoch: int, reason: str) -> None:
        """Let the shard's calls in flight finish (new ones are told NotOwner and go elsewhere),
        make its writes durable, then release its lease for the next owner."""
        namespace, shard = key
        ns = self.namespaces[namespace]
        self._draining.add(key)
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            in_shard = lambda object_id, s=shard: self.shard(object_id) == s  # noqa: E731
            while ns.host.busy(in_shard) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await self._release(key, epoch, reason)
        finally:
            self._draining.discard(key)

    async def _release(self, key: tuple[str, int], epoch: int, reason: str) -> None:
        """Its calls are done: make its writes durable, forget it, free its lease for the next owner."""
        namespace, shard = key
        await self.namespaces[namespace].engine.flush()
        self._drop(key, reason, handed_off=True)
        await self.leases.release(lease_id(namespace, shard), epoch)
        self.handoffs += 1

    def _busy_shards(self) -> set[tuple[str, int]]:
        """The shards with an event running (or loading its object) now, in one pass per class."""
        return {(name, self.shard(object_id)) for name, ns in self.namespaces.items()
                for object_id in ns.host.busy_ids()}

    async def depart(self, *, linger: bool = True) -> None:
        """A graceful stop, while this node still serves HTTP: leave the membership (so placement
        moves on and every new call here is told NotOwner, which callers re-route without error),
        hand each shard off once its calls in flight finished, then stay up one beat so callers
        that had not re-read the members yet are re-routed by a 421 rather than cut by a closing
        socket. Only then may the servers stop.

        All shards at once, each released as soon as its own calls are done: one at a time, a call
        in flight in the shard being drained that calls an object of a shard still to come waits
        for that shard's new owner, who waits for its release: a cycle only the drain timeout cut,
        cutting the call with it (a 503). Without `linger` (the runtime is closing, nothing is
        served any more) it returns as soon as the shards are handed off."""
        if self._departed:
            return
        self._departed = True
        await self._stop_rounds()
        try:
            await self.membership.leave()
        except PyMongoError as exc:
            log.warning("cluster: could not leave the membership (%s); others wait for the lease", exc)
        pending = dict(self.owned)
        self._draining.update(pending)  # new calls to any of them: NotOwner, re-routed by the caller
        failed: list[BaseException] = []
        try:
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while pending:
                busy = self._busy_shards() if time.monotonic() < deadline else set()
                done = {key: epoch for key, epoch in pending.items() if key not in busy}
                outcomes = await asyncio.gather(*(self._release(key, epoch, "this node is leaving")
                                                  for key, epoch in done.items()), return_exceptions=True)
                failed += [exc for exc in outcomes if isinstance(exc, BaseException)]
                for key in done:
                    del pending[key]
                if pending:
                    await asyncio.sleep(0.01)
        finally:
            self._draining.clear()
        if failed:
            log.warning("cluster: could not hand %d shard(s) off on the way out (%s); others wait for their lease",
                        len(failed), failed[0])
        if linger:
            await asyncio.sleep(self.settings.beat_s * 1.5)

    async def _adopt_alarmed_shards(self) -> None:
        """Take the shards placed here that have armed alarms: their alarms must run somewhere."""
        for name, ns in self.namespaces.items():
            if not ns.host.has_alarm_handler:
                continue
            for shard in await ns.engine.alarmed_shards():
                key = (name, int(shard))
                if key not in self.owned and self.winner(ns.script, name, key[1]) == self.node_id:
                    await self._take(key)

    def probe_later(self, member: Member, url: str) -> None:
        """A call to `member` is taking long: probe it (suspicion.py)."""
        self.suspicion.probe_later(member, url)

    # -- stopping and reporting --------------------------------------------------------------------
    async def stop(self) -> None:
        """After the hosts flushed: leave and hand off whatever `depart` did not (the one way out),
        then close the database client."""
        try:
            await self.depart(linger=False)
        finally:
            await self.client.close()

    def health(self) -> dict[str, Any]:
        shards: dict[str, dict[str, int]] = {}
        for (namespace, shard), epoch in sorted(self.owned.items()):
            shards.setdefault(namespace, {})[str(shard)] = epoch
        return {"nodeId": self.node_id, "pid": os.getpid(), "member": self.membership.valid,
                "leaseS": self.settings.lease_s, "shardsPerNamespace": self.settings.shards,
                "members": [m.view() for m in sorted(self.membership.members.values(), key=lambda m: m.node_id)],
                "shards": shards, "handoffs": self.handoffs, "fencedCommits": self.fenced, "suspicions": self.suspicion.count,
                "declaredDead": self.membership.declared_dead,
                "refusedWrites": sum(ns.engine.refused_writes for ns in self.namespaces.values())}

