"""Group commit, shared by every storage back end.

Writes of all objects of one namespace land in a pending layer at once; one background loop
commits whatever is pending as one atomic batch while new writes pile up for the next.
`flush(seq)` is the output gate: it returns when everything staged up to `seq` is durable.
A back end supplies only `_commit(batch)` (and its committed reads); a commit that fails for
some objects (a disk error, or a cluster node fenced off a shard) fails exactly their waiters.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .batch import UNSET, KeyRange, ObjectBatch, merge_listing


class CommitFailed(Exception):
    """What a failed commit raises in the waiters of the objects it could not write."""


class Engine:
    """Pending and in-flight layers over a back end's committed state; the group-commit loop."""

    def __init__(self) -> None:
        self.refused_writes = 0  # statistics: writes refused because their object had moved away
        self._pending: dict[str, ObjectBatch] = {}
        self._inflight: dict[str, ObjectBatch] = {}
        self._seq = 0
        self._committed = 0
        self._waiters: list[tuple[int, str | None, asyncio.Future[None]]] = []
        self._failed: dict[str, BaseException] = {}  # object → error of the commit being settled
        self._writer: asyncio.Task[None] | None = None
        self.on_commit_failure: Callable[[set[str]], None] | None = None
        self.commits = 0  # statistics: how many batches the back end committed
        self.meter: Any = None  # the namespace's ObjectMeter (durable.observe.metrics), when metrics are on
        self.closed = False

    # -- what a back end provides -----------------------------------------------------------
    async def _commit(self, batch: dict[str, ObjectBatch]) -> dict[str, BaseException]:
        """Make `batch` durable; return the objects it could not write (raise: none written)."""
        raise NotImplementedError

    def _committed_read(self, object_id: str, key: str) -> bytes | None:
        raise NotImplementedError

    def _committed_list(self, object_id: str, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def _committed_alarm(self, object_id: str) -> int | None:
        raise NotImplementedError

    def all_alarms(self) -> list[tuple[str, int]]:
        raise NotImplementedError

    async def _close_backend(self) -> None:
        raise NotImplementedError

    async def remark_ids(self, convert: Callable[[str], str]) -> int:
        """Once per store: rewrite object ids stored before ids carried their namespace's mark
        (`convert` is idempotent, so a repeated or concurrent run changes nothing)."""
        return 0

    # -- writes -------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """Sequence number of the newest staged write; `flush(seq)` waits until it is durable."""
        return self._seq

    def stage(self, object_id: str) -> ObjectBatch:
        if self.closed:
            raise RuntimeError(f"storage {self!r} is closed")
        batch = self._pending.get(object_id)
        if batch is None:
            batch = self._pending[object_id] = ObjectBatch()
        self._seq += 1
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return batch

    def has_uncommitted(self, object_id: str) -> bool:
        return object_id in self._pending or object_id in self._inflight

    def durable_up_to(self, seq: int) -> bool:
        """Are writes up to `seq` durable already? (Then `flush(seq)` would not wait.)"""
        return self._committed >= seq

    async def flush(self, seq: int | None = None, object_id: str | None = None) -> None:
        """Wait until writes up to `seq` are durable; with `object_id`, fail only if that
        object's writes could not be committed."""
        target = self._seq if seq is None else seq
        if self._committed >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, object_id, future))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        await future

    async def _write_loop(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                target = self._seq
                self._inflight = batch
                started = time.perf_counter()
                try:
                    failed = await self._commit(batch)
                    self.commits += 1
                except Exception as exc:  # disk full, I/O error, database down: nothing landed
                    failed = {object_id: exc for object_id in batch}
                if self.meter is not None:
                    self._count(batch, failed, time.perf_counter() - started)
                self._inflight = {}
                self._committed = target
                self._settle(target, failed)
                if failed and self.on_commit_failure is not None:
                    self.on_commit_failure(set(failed))
        finally:
            self._writer = None
        self._settle(self._committed, {})

    def _count(self, batch: dict[str, ObjectBatch], failed: dict[str, BaseException], took_s: float) -> None:
        """A commit's figures for /metrics: its duration, and the keys and bytes that landed."""
        meter = self.meter
        meter.commit_seconds.observe(took_s)
        landed = [changes for object_id, changes in batch.items() if object_id not in failed]
        meter.writes.inc(sum(len(changes.writes) for changes in landed))
        meter.written_bytes.inc(sum(len(value) for changes in landed for value in changes.writes.values()
                                    if value is not None))

    def _settle(self, upto: int, failed: dict[str, BaseException]) -> None:
        remaining = []
        any_error = next(iter(failed.values()), None)
        for seq, object_id, fut in self._waiters:
            if seq > upto:
                remaining.append((seq, object_id, fut))
                continue
            if fut.done():
                continue
            error = any_error if object_id is None else failed.get(object_id)
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)
        self._waiters = remaining

    # -- reads --------------------------------------------------------------------------
    def _layers(self, object_id: str) -> tuple[ObjectBatch | None, ObjectBatch | None]:
        """(in flight, pending) changes of one object: oldest first."""
        return self._inflight.get(object_id), self._pending.get(object_id)

    def read(self, object_id: str, key: str) -> bytes | None:
        for layer in reversed(self._layers(object_id)):
            if layer is not None:
                if key in layer.writes:
                    return layer.writes[key]
                if layer.clear:
                    return None
        return self._committed_read(object_id, key)

    def list(self, object_id: str, rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
        layers = self._layers(object_id)
        committed_visible = not any(layer is not None and layer.clear for layer in layers)
        base: list[tuple[str, bytes]] = []
        if committed_visible:
            overlay_size = sum(len(layer.writes) for layer in layers if layer is not None)
            base = self._committed_list(object_id, rng, reverse, None if limit is None else limit + overlay_size)
        return merge_listing(base, layers, rng, reverse, limit)

    def read_alarm(self, object_id: str) -> int | None:
        for layer in reversed(self._layers(object_id)):
            if layer is not None and layer.alarm is not UNSET:
                return layer.alarm
        return self._committed_alarm(object_id)

    async def peek(self, object_id: str, limit: int) -> tuple[list[tuple[str, bytes]], int | None]:
        """An onlooker's read (the dashboard): up to `limit` keys and the alarm, touching no cache
        and no instance. Here: what a read would see, staged writes included."""
        return self.list(object_id, KeyRange(), False, limit), self.read_alarm(object_id)

    # -- objects coming and going (back ends that keep objects in memory override these) ------
    async def load(self, object_id: str) -> None:
        """Make the object's committed state readable without waiting (before it runs)."""

    def forget(self, object_id: str) -> None:
        """The object is no longer live here: drop what `load` kept."""

    async def close(self) -> None:
        if self.closed:
            return
        await self.flush()
        self.closed = True
        await self._close_backend()

