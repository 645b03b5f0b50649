"""A client's live WebSocket joined to an object's (an order's updates): frame size, rate and idle
limits, and the session asked again as it goes (a logout or reset closes it)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import websocket

from durable import WebSocket
from durable.compat.websocket import forward

log = logging.getLogger("rest_shop.live")


@dataclass(frozen=True)
class SocketLimits:
    """What one client socket may send: frames of at most `max_frame_bytes`, at most
    `max_frames_per_min` of them, and at least one every `idle_timeout_s` (a ping will do); its
    session is asked again every `session_check_s`."""
    max_frame_bytes: int = 1024
    max_frames_per_min: int = 60
    idle_timeout_s: float = 120.0
    session_check_s: float = 5.0

    @classmethod
    def from_env(cls, worker_env: Any) -> SocketLimits:
        return cls(int(worker_env.get("LIVE_MAX_FRAME_BYTES", 1024)), int(worker_env.get("LIVE_MAX_FRAMES_PER_MIN", 60)),
                   float(worker_env.get("LIVE_IDLE_TIMEOUT_S", 120)), float(worker_env.get("LIVE_SESSION_CHECK_S", 5)))


async def join_websocket(peer: WebSocket, limits: SocketLimits = SocketLimits(),
                         session_problem: Callable[[], Awaitable[str | None]] | None = None) -> None:
    """Join the accepted Quart WebSocket to `peer` (a pair's client end) until either side closes;
    a client past `limits` is closed (1009 too big, 1008 too many, 1001 idle), and so is one
    whose session ended (`session_problem` says why: logged out everywhere, a reset, a role
    change, the account deleted, the token expired; 1008)."""
    async def incoming() -> None:
        window_start, frames = time.monotonic(), 0
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), limits.idle_timeout_s)
            except asyncio.TimeoutError:
                await websocket.close(1001, "idle: send a ping at least every %g s" % limits.idle_timeout_s)
                return
            if len(message) > limits.max_frame_bytes:
                await websocket.close(1009, f"messages are at most {limits.max_frame_bytes} bytes")
                return
            now = time.monotonic()
            if now - window_start >= 60:
                window_start, frames = now, 0
            frames += 1
            if frames > limits.max_frames_per_min:
                await websocket.close(1008, f"at most {limits.max_frames_per_min} messages a minute")
                return
            peer.send(message)

    async def watch() -> None:
        while session_problem is not None:
            await asyncio.sleep(limits.session_check_s)
            try:
                problem = await session_problem()
            except Exception as exc:  # noqa: BLE001 (the session is unknown for now, not over: ask again)
                log.warning("a live socket's session could not be checked: %s: %s", type(exc).__name__, exc)
                continue
            if problem is not None:
                await websocket.close(1008, f"session ended: {problem}"[:120])
                return

    tasks = [asyncio.ensure_future(forward(peer, websocket.send, websocket.close)), asyncio.ensure_future(incoming()),
             asyncio.ensure_future(watch())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        peer.close(1000, "")  # the client went away (or we closed): the far end hears it
