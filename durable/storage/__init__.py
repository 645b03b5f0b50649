"""Durable Object storage: the `ctx.storage` API over a group-committing engine, with one
back end per deployment: SQLite files on one node (`sqlite`), MongoDB in a cluster (`mongo`)."""
from __future__ import annotations

from .api import DurableObjectStorage, Transaction, now_ms, to_epoch_ms
from .batch import KeyRange, ObjectBatch, _prefix_end, key_range, merge_listing
from .engine import CommitFailed, Engine
from .sqlite import StorageEngine

__all__ = ["CommitFailed", "DurableObjectStorage", "Engine", "KeyRange", "ObjectBatch", "StorageEngine",
           "Transaction", "_prefix_end", "key_range", "merge_listing", "now_ms", "to_epoch_ms"]
