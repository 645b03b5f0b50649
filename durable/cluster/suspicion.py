"""Suspicion: a node that cannot open a connection to a peer, while a call to it waits, says so on
the peer's membership document; enough fresh suspicion from the others declares the peer dead
even though it still beats (a partition between nodes that all reach the database)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pymongo.errors import PyMongoError

if TYPE_CHECKING:
    from .membership import Member

log = logging.getLogger("durable.cluster")

PROBE_S = 1.0  # a peer we cannot open a connection to this fast, while a call to it waits, is suspected
VOTES_TO_DECLARE = 2  # members that must suspect a node (within a lease) to declare it dead, as Orleans


class Suspicion:
    """This node's probes of its peers, and the suspicions it keeps renewing while they last."""

    def __init__(self, node_id: str, record: Callable[[str], Awaitable[None]],
                 refresh: Callable[[], Awaitable[None]]) -> None:
        self.node_id = node_id
        self.count = 0  # peers suspected so far (for /health and /metrics)
        self._record, self._refresh = record, refresh
        self._probing: set[str] = set()
        self._suspected: dict[str, str] = {}  # node id → the URL it is probed at, while suspected

    def probe_later(self, member: Member, url: str) -> None:
        """A call to `member` is taking long: check, once at a time, whether we reach it at all."""
        if member.node_id in self._probing or member.node_id == self.node_id:
            return
        self._probing.add(member.node_id)
        task = asyncio.ensure_future(self._probe(member.node_id, url))
        task.add_done_callback(lambda _: self._probing.discard(member.node_id))

    async def _probe(self, node_id: str, url: str) -> None:
        """Suspect `node_id` if a TCP connection to it cannot be made within PROBE_S. Only the
        connection: a busy or paused process still completes handshakes (its kernel does), so
        overload is never taken for a partition (a paused node is the lease's business)."""
        if await _reachable(url):
            self._suspected.pop(node_id, None)
            return
        if node_id not in self._suspected:
            log.warning("cluster: %s cannot reach %s; suspecting it", self.node_id, node_id,
                        extra={"event": "suspect", "suspect": node_id})
            self.count += 1
        self._suspected[node_id] = url
        try:
            await self._record(node_id)
            await self._refresh()
        except PyMongoError as exc:
            log.warning("cluster: could not record the suspicion: %s", exc)

    async def renew(self) -> None:
        """Each beat, probe again whom we suspect: renew the suspicion while it stays out of
        reach (else it would lapse after a lease, the node would be placed shards again, and
        calls to it would hang until suspected anew: a flapping cluster), drop it once reached."""
        await asyncio.gather(*(self._probe(node_id, url) for node_id, url in list(self._suspected.items())))


async def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), PROBE_S)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def declared_dead(live: dict[str, Member], suspicions: dict[str, dict[str, datetime]], db_now: datetime,
                  lease_s: float) -> set[str]:
    """Members that enough others cannot reach: VOTES_TO_DECLARE live members (or every other
    one, when there are fewer) suspected each within a lease. Decided the same way on every
    node from the same documents: most-suspected first, ties by node id, and a member declared
    dead no longer votes (two nodes cut from each other but not from the database: the one
    with the greater id goes, the other stays)."""
    votes = {node_id: {voter for voter, at in by.items()
                       if voter in live and voter != node_id and (db_now - at).total_seconds() < lease_s}
             for node_id, by in suspicions.items()}
    dead: set[str] = set()
    for node_id in sorted((n for n in votes if votes[n]), key=lambda n: (len(votes[n]), n), reverse=True):
        needed = min(VOTES_TO_DECLARE, len(live) - 1 - len(dead))
        if needed > 0 and len(votes[node_id] - dead) >= needed:
            dead.add(node_id)
    return dead
