"""Shard leases: who owns a shard, at which epoch. The epoch is the fence.

A lease document `{_id: "<script.Class>/<shard>", owner, epoch, commits}` is taken with a
compare-and-set on (owner, epoch) that raises the epoch, and only when the last owner gave it
up or is no longer a live member. Every storage commit touches the lease document with a filter
on (owner, epoch) inside its transaction, so once another node has taken the shard, the old
owner's commits match nothing and write nothing, whatever its clock or its beliefs.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError


class ShardLeases:
    def __init__(self, collection: AsyncCollection, node_id: str,
                 before_takeover: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.collection = collection
        self.node_id = node_id
        self._before_takeover = before_takeover  # given the dead owner: end what it left open

    async def acquire(self, lease_id: str, live: Collection[str]) -> int | None:
        """Take the lease; the new epoch, or None while a live member holds it."""
        doc = await self.collection.find_one({"_id": lease_id})
        if doc is None:
            try:
                await self.collection.insert_one({"_id": lease_id, "owner": self.node_id, "epoch": 1, "commits": 0})
                return 1
            except DuplicateKeyError:
                doc = await self.collection.find_one({"_id": lease_id})
                if doc is None:
                    return None
        owner, epoch = doc.get("owner"), int(doc.get("epoch", 0))
        if owner is not None and owner != self.node_id and owner in live:
            return None
        if owner is not None and owner != self.node_id and self._before_takeover is not None:
            await self._before_takeover(owner)
        taken = await self.collection.update_one({"_id": lease_id, "owner": owner, "epoch": epoch},
                                                 {"$set": {"owner": self.node_id}, "$inc": {"epoch": 1}})
        return epoch + 1 if taken.matched_count == 1 else None

    async def release(self, lease_id: str, epoch: int) -> None:
        """Give the shard up (hand-off): the next owner need not wait for our membership to lapse."""
        await self.collection.update_one({"_id": lease_id, "owner": self.node_id, "epoch": epoch},
                                         {"$set": {"owner": None}})
