"""Membership: each node beats its own document; the database's clock judges who is alive.

A beat is one `find_one_and_update` that bumps the node's counter and stamps `at` with the
database server's time (`$currentDate`), then one `find` reads every member. A member is alive
while `now - at < lease_s`, both times from the database's clock, so skew between nodes' clocks
cannot make a live node look dead. A node trusts its own membership only until `lease_s`
(times SELF_MARGIN) after it *sent* its last acknowledged beat, on its own monotonic clock: it
stops serving before anyone else can judge it dead. Writes do not depend on this (leases fence
them); it keeps a paused or partitioned node from answering reads from memory.

The beat that keeps a node valid runs on a thread of its own with a connection of its own
(`Heart`): a busy event loop (a load spike, a long handler) must not make a live node miss its
beat and drop every shard, which adds load and makes the next beat late too (a drop/retake
loop). Validity only ever extends without a gap: a beat sent after the node had lapsed (a pause,
a partition) does not revive it until the event loop has dropped what it held (`take_lapse`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote

from pymongo import MongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from .suspicion import declared_dead

log = logging.getLogger("durable.cluster")

SELF_MARGIN = 0.7  # stop trusting ourselves well before others may take over
FORGET_AFTER_S = 3600  # a member silent this long is removed from the collection
FORGET_EVERY_BEATS = 40
DEPARTED_KEPT_S = 60.0  # how long calls in flight to a node that left gracefully are still waited for


@dataclass(frozen=True)
class Member:
    node_id: str
    urls: dict[str, str]      # worker name → base URL this node serves it on
    internal: dict[str, str] = field(default_factory=dict)  # worker → its internal listener (object calls)
    pid: int = 0
    host: str = ""
    boot: str = ""
    beat: int = 0
    age_s: float = 0.0        # seconds since its last beat, by the database's clock
    version: str = ""         # the code it runs

    def serves(self, script: str) -> bool:
        return script in self.urls

    def audience(self, script: str) -> str:
        """Whom a signed call to `script` on this node names: where the node serves it. Not the
        node's id: during a reload the old and the new process of a worker share their
        listening sockets (either may take a call), and they serve at the same address."""
        return self.urls[script]

    def objects_url(self, script: str) -> str:
        """Where this node takes calls to `script`'s objects: its internal listener, if it has one."""
        return self.internal.get(script) or self.urls[script]

    def view(self) -> dict[str, Any]:
        return {"nodeId": self.node_id, "pid": self.pid, "host": self.host, "boot": self.boot,
                "urls": self.urls, "internal": self.internal, "beat": self.beat, "lastBeatAgeS": round(self.age_s, 2),
                "version": self.version}


@dataclass
class Membership:
    collection: AsyncCollection
    node_id: str
    urls: dict[str, str]
    lease_s: float
    internal: dict[str, str] = field(default_factory=dict)
    code_version: str = ""  # the code this node runs, on its document for the others to see
    boot: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    members: dict[str, Member] = field(default_factory=dict)
    _valid_until: float = 0.0
    version: int = 0  # bumps whenever the set of live members changes
    _sessions: set[bytes] = field(default_factory=set)
    beats: int = 0  # acknowledged beats so far
    _leaving: bool = False
    _lapsed: bool = False  # a beat came back after a gap: what we hold must be dropped first
    declared_dead: bool = False  # enough live members suspect us (see declared_dead())
    departed: dict[str, float] = field(default_factory=dict)  # left gracefully → seconds ago: finishing their calls

    @property
    def valid(self) -> bool:
        """May this node still act as a member (serve the shards it holds)?"""
        return time.monotonic() < self._valid_until

    def acknowledged(self, sent: float) -> None:
        """A beat sent at `sent` (monotonic) reached the database: valid until a lease after it,
        unless we had lapsed before it was sent (then the event loop drops all first), or the
        others declared us dead (until their suspicion lapses)."""
        if self._leaving:
            return
        if self.declared_dead:
            self._lapsed = True
            return
        if self._valid_until and sent > self._valid_until:
            self._lapsed = True
        if not self._lapsed:
            self._valid_until = max(self._valid_until, sent + self.lease_s * SELF_MARGIN)

    def take_lapse(self) -> bool:
        """Did we lapse since the last call? (The caller drops everything it holds, then validity
        may extend again from the next beat.)"""
        lapsed, self._lapsed = self._lapsed, False
        if lapsed:
            self._valid_until = 0.0  # a fresh start: the next beat makes us valid again
        return lapsed

    async def beat(self) -> None:
        sent = time.monotonic()
        mine = await self.collection.find_one_and_update(
            {"_id": self.node_id},
            {"$set": {"urls": self.urls, "internal": self.internal, "pid": os.getpid(), "host": socket.gethostname(),
                      "boot": self.boot, "version": self.code_version, "left": False},
             "$inc": {"beat": 1}, "$currentDate": {"at": True}},
            upsert=True, return_document=ReturnDocument.AFTER)
        self.acknowledged(sent)
        await self._read_members(mine["at"])
        self.beats += 1
        if self.beats % FORGET_EVERY_BEATS == 1:  # nodes that died (or left) long ago: their documents go
            await self.collection.delete_many({"at": {"$lt": mine["at"] - timedelta(seconds=FORGET_AFTER_S)}})

    async def refresh(self) -> None:
        """Re-read the members (after a node answered that it does not own what we thought)."""
        now = await self.collection.find_one_and_update({"_id": self.node_id}, {"$currentDate": {"probe": True}},
                                                        return_document=ReturnDocument.AFTER)
        if now is not None:
            await self._read_members(now["probe"])

    async def _read_members(self, db_now: datetime) -> None:
        live: dict[str, Member] = {}
        suspicions: dict[str, dict[str, datetime]] = {}
        # a node that left stops beating; its calls in flight finish within its drain, which can
        # outlast a lease: remember it that long
        recent = db_now - timedelta(seconds=max(self.lease_s, DEPARTED_KEPT_S))
        departed: dict[str, float] = {}
        async for doc in self.collection.find({"at": {"$gte": recent}}):
            age = (db_now - doc["at"]).total_seconds()
            if doc.get("left"):
                departed[doc["_id"]] = age
            elif age < self.lease_s:
                live[doc["_id"]] = Member(doc["_id"], dict(doc.get("urls") or {}), dict(doc.get("internal") or {}),
                                          doc.get("pid", 0), doc.get("host", ""), doc.get("boot", ""),
                                          doc.get("beat", 0), max(age, 0.0), doc.get("version", ""))
                suspicions[doc["_id"]] = {unquote(k): v for k, v in (doc.get("suspects") or {}).items()}
        dead = declared_dead(live, suspicions, db_now, self.lease_s)
        self.declared_dead = self.node_id in dead
        if self.declared_dead:
            self._valid_until = 0.0  # stop serving: the others are moving our shards
        for node_id in dead:
            live.pop(node_id, None)
        if set(live) != set(self.members):
            self.version += 1
        self.members = live
        self.departed = departed

    async def suspect(self, node_id: str) -> None:
        """This node could not reach `node_id` (a probe failed): say so on its document. Enough
        fresh suspicion declares it dead even though it still beats (a partition between nodes
        that all reach the database)."""
        await self.collection.update_one({"_id": node_id, "left": False},
                                         {"$currentDate": {f"suspects.{quote(self.node_id, safe='')}": True}})

    def live_ids(self, script: str | None = None) -> list[str]:
        """Members alive now (this node only while its own membership is valid)."""
        return [m.node_id for m in self.members.values()
                if (script is None or m.serves(script)) and (m.node_id != self.node_id or self.valid)]

    async def record_session(self, lsid: dict[str, Any]) -> None:
        """Note a database session this node commits in, before its first use: if the node dies
        in the middle of a transaction, whoever takes its shards ends that session (its locks
        would otherwise hold the shard's lease document until the server's transaction timeout)."""
        key = bytes(lsid["id"])
        if key not in self._sessions:
            await self.collection.update_one({"_id": self.node_id}, {"$addToSet": {"lsids": lsid}})
            self._sessions.add(key)

    async def end_sessions_of(self, node_id: str) -> None:
        """Abort the transactions a dead member left open (killSessions on what it recorded)."""
        doc = await self.collection.find_one({"_id": node_id}, {"lsids": 1})
        lsids = list((doc or {}).get("lsids") or [])
        if lsids:
            await self.collection.database.client.admin.command("killSessions", lsids)

    async def leave(self) -> None:
        """Graceful exit: the others stop counting this node at their next beat, not after a lease."""
        self._leaving = True
        await self.collection.update_one({"_id": self.node_id}, {"$set": {"left": True}})
        self._valid_until = 0.0


class Heart:
    """The node's own beat, on a thread and a connection (pymongo's synchronous client) of its
    own, so a busy event loop cannot delay it; each acknowledged beat goes to `on_beat(sent)`."""

    def __init__(self, uri: str, database: str, node_id: str, beat_s: float, timeout_s: float,
                 on_beat: Callable[[float], None]) -> None:
        self.uri, self.database, self.node_id = uri, database, node_id
        self.beat_s, self.timeout_s, self.on_beat = beat_s, timeout_s, on_beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heart-{node_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 1)

    def _run(self) -> None:
        timeout_ms = int(self.timeout_s * 1000)
        client: MongoClient[dict[str, Any]] = MongoClient(self.uri, serverSelectionTimeoutMS=timeout_ms,
                                                          connectTimeoutMS=timeout_ms, socketTimeoutMS=timeout_ms)
        nodes = client[self.database]["nodes"]
        try:
            while not self._stop.wait(self.beat_s):
                sent = time.monotonic()
                try:
                    done = nodes.update_one({"_id": self.node_id, "left": False}, {"$currentDate": {"at": True}})
                except PyMongoError as exc:
                    log.warning("cluster: beat failed: %s", exc, extra={"event": "beat_failed"})
                    continue
                if done.matched_count and not self._stop.is_set():
                    self.on_beat(sent)
        finally:
            client.close()
