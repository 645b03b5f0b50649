"""Where an object lives: object id → shard (fixed), shard → owner node (rendezvous hashing).

The shard of an id never changes (it is a function of the id and the namespace's shard count),
so storage and alarms can be grouped by shard and moved a shard at a time. The owner of a shard
is the live member with the highest hash of (member, shard): when a node joins or leaves, only
the shards it wins or held move, and every node computes the same answer from the same members.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

DEFAULT_SHARDS = 256


def shard_of(object_id: str, shards: int) -> int:
    """Ids are 64 hex characters of a hash (or random): their first 64 bits are uniform."""
    return int(object_id[:16], 16) % shards


def _score(node_id: str, shard_key: str) -> bytes:
    return hashlib.blake2b(f"{node_id}\x00{shard_key}".encode(), digest_size=8).digest()


def owner_of(shard_key: str, node_ids: Iterable[str]) -> str | None:
    """The rendezvous winner among `node_ids` for `shard_key` (None when there is no node)."""
    best: tuple[bytes, str] | None = None
    for node_id in node_ids:
        candidate = (_score(node_id, shard_key), node_id)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


def lease_id(namespace: str, shard: int) -> str:
    """The lease document of one shard of one namespace (`script.Class`)."""
    return f"{namespace}/{shard}"
