"""Membership against a real (embedded) MongoDB: who counts as alive is judged by the database's
clock, and members silent for long are removed."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import AsyncMongoClient

from durable.cluster.membership import Membership


async def test_members_are_judged_by_the_database_clock_and_old_ones_are_removed(mongo_uri: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    nodes = client[f"t_{uuid.uuid4().hex[:12]}"]["nodes"]
    try:
        now = datetime.now(timezone.utc)
        ghost: dict[str, Any] = {"urls": {"w": "http://ghost"}, "left": False, "beat": 9}
        await nodes.insert_many([{**ghost, "_id": "ancient", "at": now - timedelta(hours=2)},
                                 {**ghost, "_id": "silent", "at": now - timedelta(seconds=30)},
                                 {**ghost, "_id": "gone", "at": now, "left": True}])
        other = Membership(nodes, "other", {"w": "http://other"}, lease_s=6.0)
        await other.beat()
        me = Membership(nodes, "me", {"w": "http://me"}, lease_s=6.0)
        await me.beat()
        assert sorted(me.members) == ["me", "other"]  # not the silent, the left or the ancient one
        assert me.valid and sorted(me.live_ids("w")) == ["me", "other"]
        assert await nodes.find_one({"_id": "ancient"}) is None  # removed at the first beat
        assert await nodes.find_one({"_id": "silent"}) is not None  # kept a while: its sessions may matter
    finally:
        await client.close()
