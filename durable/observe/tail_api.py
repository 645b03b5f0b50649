"""Live tails: the hub that fans trace events out to tail sessions, and the API that serves them.

The API has Cloudflare's shape, so a client written for it attaches here unchanged:
`POST /accounts/{account}/workers/scripts/{name}/tails` (body: filters) → `{id, url, expires_at}`
in Cloudflare's result envelope, a WebSocket at `url` (subprotocol `trace-v1`, one JSON event
per message), and `DELETE .../tails/{id}`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from ..server import url_of
from .tail import TailFilters

QUEUE_LIMIT = 1000
TAIL_LIFETIME = timedelta(hours=6)


@dataclass
class TailSession:
    id: str
    script_name: str
    filters: TailFilters
    expires_at: datetime
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    dropped: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class TailHub:
    """Receives every trace event of this process and queues it for matching sessions."""

    def __init__(self) -> None:
        self.sessions: dict[str, TailSession] = {}

    def create(self, script_name: str, filters: TailFilters) -> TailSession:
        session = TailSession(secrets.token_hex(16), script_name, filters,
                              datetime.now(timezone.utc) + TAIL_LIFETIME)
        self.sessions[session.id] = session
        return session

    def delete(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.closed.set()
        return session is not None

    def listening(self, script_name: str) -> bool:
        """Is any tail open on this script? (Lets hot paths skip building events nobody reads.)"""
        return any(session.script_name == script_name for session in self.sessions.values())

    def publish(self, event: dict[str, Any]) -> None:
        if not self.sessions:
            return
        for session in list(self.sessions.values()):
            if session.script_name == event.get("scriptName") and session.filters.matches(event):
                try:
                    session.queue.put_nowait(event)
                except asyncio.QueueFull:  # a stalled client must not grow memory without bound
                    session.dropped += 1


def _envelope(result: Any = None, *, errors: list[dict[str, Any]] | None = None, status: int = 200) -> web.Response:
    return web.json_response({"success": not errors, "errors": errors or [], "messages": [], "result": result},
                             status=status)


def create_tail_app(hub: TailHub, scripts: set[str], *, token: str | None = None) -> web.Application:
    """The stand-in for Cloudflare's tail API, for the scripts this process runs.

    aiohttp serves it, not our ASGI server: Cloudflare's own CLI sends its first WebSocket frame
    unmasked, which the `websockets` and wsproto protocols refuse and aiohttp accepts. With `token` (production),
    creating and deleting tails needs `Authorization: Bearer <token>`; the WebSocket URL itself
    is the capability (an unguessable id, as on Cloudflare)."""
    api = _TailApi(hub, scripts, token)
    app = web.Application(middlewares=[api.authorize])
    app.router.add_get("/scripts", api.list_scripts)
    app.router.add_post("/accounts/{account}/workers/scripts/{name}/tails", api.create_tail)
    app.router.add_get("/accounts/{account}/workers/scripts/{name}/tails", api.list_tails)
    app.router.add_delete("/accounts/{account}/workers/scripts/{name}/tails/{tail_id}", api.delete_tail)
    app.router.add_get("/tail/{tail_id}", api.stream)
    return app


class _TailApi:
    def __init__(self, hub: TailHub, scripts: set[str], token: str | None) -> None:
        self.hub, self.scripts, self.token = hub, scripts, token

    @web.middleware
    async def authorize(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is None or request.path.startswith("/tail/"):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            return _envelope(errors=[{"code": 10000, "message": "Authentication error: send Authorization: "
                                                                "Bearer <TAIL_TOKEN>"}], status=401)
        if not hmac.compare_digest(given[len("Bearer "):].strip().encode(), self.token.encode()):
            return _envelope(errors=[{"code": 10000, "message": "Authentication error"}], status=403)
        return await handler(request)

    async def list_scripts(self, request: web.Request) -> web.Response:
        return _envelope(sorted(self.scripts))

    async def create_tail(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.scripts:
            return _envelope(errors=[{"code": 10007, "message": f"workers.api.error.script_not_found: {name}"}],
                             status=404)
        try:
            body = await request.json() if request.can_read_body else None
        except ValueError:
            body = None
        try:
            filters = TailFilters.from_api(body, request.remote)
        except ValueError as exc:
            return _envelope(errors=[{"code": 10021, "message": f"invalid tail filters: {exc}"}], status=400)
        session = self.hub.create(name, filters)
        scheme = "wss" if request.secure else "ws"
        return _envelope({"id": session.id, "url": f"{scheme}://{request.host}/tail/{session.id}",
                          "expires_at": session.expires_at.isoformat().replace("+00:00", "Z")})

    async def list_tails(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return _envelope([{"id": t.id, "expires_at": t.expires_at.isoformat().replace("+00:00", "Z")}
                          for t in self.hub.sessions.values() if t.script_name == name])

    async def delete_tail(self, request: web.Request) -> web.Response:
        if not self.hub.delete(request.match_info["tail_id"]):
            return _envelope(errors=[{"code": 10000, "message": "tail not found"}], status=404)
        return _envelope(None)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        return await stream_tail(self.hub, request, request.match_info["tail_id"])


async def stream_tail(hub: TailHub, request: web.Request, tail_id: str) -> web.StreamResponse:
    """One tail's events over a WebSocket (`trace-v1`), until either side closes; then the tail goes."""
    session = hub.sessions.get(tail_id)
    ws = web.WebSocketResponse(protocols=("trace-v1",), heartbeat=30)
    await ws.prepare(request)
    if session is None:
        await ws.close(code=1008, message=b"unknown tail")
        return ws

    async def drain_client() -> None:  # the client sends {"debug": false}; nothing else matters
        async for _ in ws:
            pass

    reader = asyncio.ensure_future(drain_client())
    try:
        while not session.closed.is_set() and not reader.done():
            getter = asyncio.ensure_future(session.queue.get())
            closer = asyncio.ensure_future(session.closed.wait())
            done, _ = await asyncio.wait({getter, closer, reader}, return_when=asyncio.FIRST_COMPLETED)
            closer.cancel()
            if getter in done:
                await ws.send_str(json.dumps(getter.result()))
            else:
                getter.cancel()
    except (ConnectionResetError, RuntimeError):
        pass  # the client went away mid-send
    finally:
        reader.cancel()
        hub.delete(tail_id)
        await ws.close()
    return ws


class TailServer:
    """The tail API on a socket we bound (so `--port 0` and printed URLs are exact)."""

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self.sock = sock
        self.url = url_of(sock)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock, shutdown_timeout=1.0).start()

    async def stop(self) -> None:
        await self._runner.cleanup()
