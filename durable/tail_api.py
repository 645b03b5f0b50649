"""Live tails: the hub that fans trace events out to tail sessions, and the API that serves them.

The API has Cloudflare's shape, so a client written for it attaches here unchanged:
`POST /accounts/{account}/workers/scripts/{name}/tails` (body: filters) → `{id, url, expires_at}`
in Cloudflare's result envelope, a WebSocket at `url` (subprotocol `trace-v1`, one JSON event
per message), and `DELETE .../tails/{id}`.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from quart import Quart, request, websocket

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

    def publish(self, event: dict[str, Any]) -> None:
        if not self.sessions:
            return
        for session in list(self.sessions.values()):
            if session.script_name == event.get("scriptName") and session.filters.matches(event):
                try:
                    session.queue.put_nowait(event)
                except asyncio.QueueFull:  # a stalled client must not grow memory without bound
                    session.dropped += 1


def _envelope(result: Any = None, *, errors: list[dict[str, Any]] | None = None, status: int = 200) -> tuple[Any, int]:
    return {"success": not errors, "errors": errors or [], "messages": [], "result": result}, status


def create_tail_app(hub: TailHub, scripts: set[str]) -> Quart:
    """The local stand-in for Cloudflare's tail API, for the scripts this process runs."""
    app = Quart("durable.tail_api")

    @app.get("/scripts")
    async def list_scripts() -> Any:
        return _envelope(sorted(scripts))

    @app.post("/accounts/<account>/workers/scripts/<name>/tails")
    async def create_tail(account: str, name: str) -> Any:
        if name not in scripts:
            return _envelope(errors=[{"code": 10007, "message": f"workers.api.error.script_not_found: {name}"}],
                             status=404)
        body = await request.get_json(force=True, silent=True)
        try:
            filters = TailFilters.from_api(body, request.remote_addr)
        except ValueError as exc:
            return _envelope(errors=[{"code": 10021, "message": f"invalid tail filters: {exc}"}], status=400)
        session = hub.create(name, filters)
        scheme = "wss" if request.scheme == "https" else "ws"
        return _envelope({"id": session.id, "url": f"{scheme}://{request.host}/tail/{session.id}",
                          "expires_at": session.expires_at.isoformat().replace("+00:00", "Z")})

    @app.delete("/accounts/<account>/workers/scripts/<name>/tails/<tail_id>")
    async def delete_tail(account: str, name: str, tail_id: str) -> Any:
        if not hub.delete(tail_id):
            return _envelope(errors=[{"code": 10000, "message": "tail not found"}], status=404)
        return _envelope(None)

    @app.websocket("/tail/<tail_id>")
    async def stream(tail_id: str) -> None:
        session = hub.sessions.get(tail_id)
        if session is None:
            await websocket.close(1008, "unknown tail")
            return
        protocols = websocket.requested_subprotocols
        await websocket.accept(subprotocol="trace-v1" if "trace-v1" in protocols else None)

        async def drain_client() -> None:  # the client sends {"debug": false}; nothing else matters
            while True:
                await websocket.receive()

        reader = asyncio.ensure_future(drain_client())
        try:
            while not session.closed.is_set() and not reader.done():
                getter = asyncio.ensure_future(session.queue.get())
                closer = asyncio.ensure_future(session.closed.wait())
                done, _ = await asyncio.wait({getter, closer, reader}, return_when=asyncio.FIRST_COMPLETED)
                closer.cancel()
                if getter in done:
                    await websocket.send(json.dumps(getter.result()))
                else:
                    getter.cancel()
        finally:
            reader.cancel()
            hub.delete(tail_id)

    return app
