"""Object calls in a cluster: to the shard's owner, in this process or over signed HTTP.

The owner comes from the node's member table (refreshed by its beat, never a database read per
call). A node that answers "not the owner" (421), or a call the local guard refuses, makes the
caller re-read the members and try again, a bounded number of times with a short backoff; a
shard in hand-off or a dead owner's lease running out both look like that for a few seconds.
Every wait is bounded by the request's deadline, and a call to another node is abandoned as soon
as the members stop counting that node (it crashed or is cut off), not when the network heals.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .. import deadline
from ..errors import NotDelivered, NotOwner, ObjectUnavailable
from ..http import Request, Response
from ..ids import DurableObjectId
from ..objects import LocalTransport, ObjectHost
from ..observe import metrics
from ..rpc.client import HttpClient, RemoteTarget, open_object_socket, post_object_call
from .membership import Member
from .node import ClusterNode

ATTEMPTS = 60  # at most; the request's deadline, or MOVE_WAIT_S, ends the retries first
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
# How long a call keeps looking for an object's owner (its shard moving: a roll, a leave, a heal;
# its node dead until the lease runs out) before it answers 503 with Retry-After: a client told
# to come back in a second does better than one held until it gives up (ARCHITECTURE.md, Beyond
# one machine). A graceful hand-off usually takes well under it (its drain is capped at 5 s). No
# new attempt starts after it; one under way still runs within the request's deadline.
MOVE_WAIT_S = 3.0


class ClusterTransport:
    def __init__(self, node: ClusterNode, script_name: str, class_name: str, host: ObjectHost | None,
                 http: HttpClient, internal_key: str) -> None:
        self.node = node
        self.script_name = script_name
        self.class_name = class_name
        self.namespace = f"{script_name}.{class_name}"
        self._local = LocalTransport(host) if host is not None else None
        self._http = http
        self._key = internal_key

    async def call(self, object_id: DurableObjectId, method: str, payload: bytes) -> bytes:
        return await self._to_owner(
            object_id,
            lambda local: local.call(object_id, method, payload),
            lambda target: post_object_call(self._http, target, self.script_name, self.class_name, object_id,
                                            method, payload))

    async def connect(self, object_id: DurableObjectId, request: Request) -> Response:
        """A WebSocket fetch: on this node the object's own answer, elsewhere one joined to it."""
        return await self._to_owner(
            object_id,
            lambda local: local.invoke(object_id, "fetch", [request], {}),
            lambda target: open_object_socket(self._http, target, self.class_name, object_id, request))

    async def _to_owner(self, object_id: DurableObjectId, here: Callable[[LocalTransport], Awaitable[Any]],
                        there: Callable[[RemoteTarget], Awaitable[Any]]) -> Any:
        backoff = FIRST_BACKOFF_S
        last: Exception | None = None
        give_up_at = time.monotonic() + MOVE_WAIT_S
        for _ in range(ATTEMPTS):
            owner = self.node.owner(self.script_name, self.namespace, str(object_id))
            try:
                if owner is None and not self.node.joined:  # its database away since the start: no waiting
                    raise ObjectUnavailable(f"{self.class_name}: this node has not joined the cluster yet "
                                            f"(its coordination database does not answer)")
                if owner is None:
                    raise NotOwner(f"no live node serves {self.script_name}")
                if owner.node_id == self.node.node_id and self._local is not None:
                    await self._local.host.guard(object_id)  # type: ignore[misc]
                    return await here(self._local)
                target = RemoteTarget(owner.objects_url(self.script_name), self._key, owner.audience(self.script_name))
                return await self._remote(owner, target, there(target))
            except NotDelivered as exc:  # not the owner (any more), or no connection: it did not run
                last = exc
            left = min(deadline.remaining(), give_up_at - time.monotonic())
            if left <= backoff:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            await self.node.refresh()
        raise ObjectUnavailable(f"{self.class_name} {str(object_id)[:12]}: no node could take the call ({last})")

    async def _remote(self, owner: Member, target: RemoteTarget, call: Awaitable[Any]) -> Any:
        """A call to another node, timed by outcome (ok, not_owner, unreachable, failed) for /metrics."""
        started = time.perf_counter()
        outcome = "failed"
        try:
            result = await self._while_member(owner, target, call)
            outcome = "ok"
            return result
        except NotOwner:
            outcome = "not_owner"
            raise
        except NotDelivered:
            outcome = "unreachable"
            raise
        finally:
            metrics.CLUSTER_REMOTE_SECONDS.labels(self.class_name, outcome).observe(time.perf_counter() - started)

    async def _while_member(self, owner: Member, target: RemoteTarget, call: Awaitable[Any]) -> Any:
        """Wait for a call to another node only while the members count that node: one that went
        silent (crashed, or cut off from us and the database) may never answer, and its shards
        move once its lease runs out, or once enough members that cannot reach it say so. The
        call may have run there: a retryable 503, not a resend. A node that left gracefully
        finishes its calls before it stops: those are waited for."""
        task = asyncio.ensure_future(call)
        waited = 0
        try:
            while True:
                done, _ = await asyncio.wait((task,), timeout=self.node.settings.beat_s)
                if done:
                    return task.result()
                membership = self.node.membership
                if owner.node_id not in membership.members and owner.node_id not in membership.departed:
                    raise ObjectUnavailable(f"{self.class_name}: node {owner.node_id} went silent mid-call "
                                            f"and is no longer a member")
                waited += 1
                if waited >= 2:  # slow, or cut off from us though not from the database: ask it
                    self.node.probe_later(owner, target.url)
        finally:
            if not task.done():
                task.cancel()
