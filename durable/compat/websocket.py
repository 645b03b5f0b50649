"""WebSockets with Cloudflare's hibernation API: `WebSocketPair`, `ctx.acceptWebSocket(ws, tags)`,
`ctx.getWebSockets(tag)`, and the object's `webSocketMessage`/`webSocketClose`/`webSocketError`.

A fetch handler makes a pair, keeps the server end (accepting it on a Durable Object) and answers
`Response(None, status=101, web_socket=client)`. The runtime then joins the client end to the
real connection (`bridge`). Messages from the client become events of the object that accepted
the server end, delivered through its input gate one at a time in order; `server.send()` goes to
the client. The sockets belong to the object's host, not to the instance, so an object evicted
while idle (hibernated) keeps them and a new instance receives the next message.
Across processes (a service binding to a worker elsewhere, the gateway in front of a service),
`fetch` with `Upgrade: websocket` returns the same 101 Response: `asgi_websocket` runs an ASGI app's
WebSocket in this process, `connect_remote` opens a real one to another process, and either way
the caller gets the client end of a pair to use or to `bridge` on.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiohttp

if TYPE_CHECKING:
    from ..http import Request, Response

log = logging.getLogger("durable.websocket")

CONNECTING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3
MAX_MESSAGE_BYTES = 1024 * 1024  # Cloudflare's limit on a received message
MESSAGE_TOO_BIG = 1009


class WebSocketError(Exception):
    """What `webSocketError(ws, error)` receives: the connection failed (not a clean close)."""


class WebSocket:
    """One end of a pair. `send` and `close` do not wait (as in Cloudflare's API)."""

    def __init__(self) -> None:
        self.peer: WebSocket | None = None
        self.readyState = OPEN
        self.tags: list[str] = []
        self._attachment: Any = None
        self._outbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()  # what this end's owner must deliver
        self._owner: Any = None  # (host, object_id) once a Durable Object accepted this end
        self._deliveries: asyncio.Task[None] | None = None
        self.auto_response_at: float | None = None  # when the runtime last answered it (ms)
        self._keepalive: Any = None  # what serves the other side of this end (a task), kept referenced

    # -- Cloudflare's API -------------------------------------------------------------------
    def accept(self) -> None:
        """Accepted by code that handles the socket itself; events arrive on this end's queue."""

    def send(self, message: str | bytes) -> None:
        if self.readyState >= CLOSING or self.peer is None:
            raise RuntimeError("WebSocket is closed")
        self.peer._receive(("message", message))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.readyState >= CLOSING:
            return
        self.readyState = CLOSING
        if self._owner is not None:  # the object closed it: no more events, the runtime lets go
            host, object_id = self._owner
            host.forget_websocket(object_id, self)
        if self.peer is not None:
            self.peer._receive(("close", (code, reason)))

    def serializeAttachment(self, value: Any) -> None:
        self._attachment = value

    def deserializeAttachment(self) -> Any:
        return self._attachment

    serialize_attachment, deserialize_attachment = serializeAttachment, deserializeAttachment

    # -- the runtime's side -----------------------------------------------------------------
    def owned_by(self, host: Any, object_id: Any) -> None:
        """A Durable Object accepted this end: its host delivers the events from now on."""
        self._owner = (host, object_id)

    def _receive(self, item: tuple[str, Any]) -> None:
        """Something the peer sent (a message or its close) arrives at this end."""
        if self.readyState == CLOSED:
            return
        if item[0] in ("close", "error"):
            self.readyState = CLOSED
        elif self._owner is not None:
            host, object_id = self._owner
            pair = host.websocket_auto_response(object_id)
            if pair is not None and item[1] == pair.request:  # answered without waking the object
                self.auto_response_at = time.time() * 1000
                self.send(pair.response)
                return
        self._outbox.put_nowait(item)
        if self._owner is not None and (self._deliveries is None or self._deliveries.done()):
            self._deliveries = asyncio.get_running_loop().create_task(self._deliver_to_owner())

    async def _deliver_to_owner(self) -> None:
        """One event at a time, in order, to the object that accepted this end."""
        host, object_id = self._owner
        while not self._outbox.empty():
            kind, value = self._outbox.get_nowait()
            if kind == "message":
                method, args = "webSocketMessage", [self, value]
            elif kind == "error":
                method, args = "webSocketError", [self, value]
                host.forget_websocket(object_id, self)
            else:
                code, reason = value
                method, args = "webSocketClose", [self, code, reason, code != 1006]
                host.forget_websocket(object_id, self)
            if callable(getattr(host.cls, method, None)):
                try:
                    await host.deliver_event(object_id, method, args)
                except Exception as exc:  # the object was reset; the socket stays with the host
                    log.warning("%s.%s: %s failed: %s", host.script_name, host.class_name, method, exc)

    async def next_outgoing(self) -> tuple[str, Any]:
        return await self._outbox.get()


class WebSocketRequestResponsePair:
    """`setWebSocketAutoResponse(pair)`: a message equal to `request` is answered with `response`
    by the runtime itself, without waking (or queueing behind) the object — for pings."""

    def __init__(self, request: str, response: str) -> None:
        self.request, self.response = request, response

    @classmethod
    def new(cls, request: str, response: str) -> WebSocketRequestResponsePair:
        return cls(request, response)


class WebSocketPair:
    """`WebSocketPair()` (or `.new()`, as Pyodide spells JavaScript's `new`): two joined ends;
    `[0]` is the client's, `[1]` the server's; `Object.values(pair)` lists them."""

    def __init__(self) -> None:
        self.client, self.server = WebSocket(), WebSocket()
        self.client.peer, self.server.peer = self.server, self.client

    @classmethod
    def new(cls) -> WebSocketPair:
        return cls()

    def __getitem__(self, index: int) -> WebSocket:
        return (self.client, self.server)[index]

    def values(self) -> list[WebSocket]:
        return [self.client, self.server]

    def object_values(self) -> list[WebSocket]:
        """Pyodide's JsProxy spelling of `Object.values(pair)`: `[client, server]`."""
        return self.values()


class Object:
    """The bit of JavaScript's `Object` Cloudflare's Python examples use: `Object.values(pair)`."""

    @staticmethod
    def values(value: Any) -> list[Any]:
        if isinstance(value, WebSocketPair):
            return value.values()
        if isinstance(value, dict):
            return list(value.values())
        return list(vars(value).values())


async def forward(end: WebSocket, send: Callable[[str | bytes], Awaitable[Any]],
                  close: Callable[[int, str], Awaitable[Any]]) -> None:
    """Carry what arrives at `end` (what its peer sends) out through `send`, until the peer closes
    it (then `close(code, reason)`): the one loop that joins a pair to any real connection."""
    while True:
        kind, value = await end.next_outgoing()
        if kind == "close":
            await close(*value)
            return
        await send(value)


def _payload(message: dict[str, Any]) -> str | bytes:
    """The data of an ASGI `websocket.receive` or `websocket.send` message."""
    return message["text"] if message.get("text") is not None else message.get("bytes", b"")


async def bridge(client: WebSocket, receive: Any, send: Any, first: bytes | None = None) -> None:
    """Join the client end of a pair to a real (ASGI) WebSocket connection until either closes
    (`first`: a message sent before any of the pair's, as the internal object route's answer head)."""
    await send({"type": "websocket.accept"})
    if first is not None:
        await send({"type": "websocket.send", "bytes": first})

    def fail(error: WebSocketError) -> None:
        client.readyState = CLOSED
        if client.peer is not None:
            client.peer._receive(("error", error))

    async def write() -> None:
        try:
            await forward(client, lambda data: send({"type": "websocket.send",
                                                     "text" if isinstance(data, str) else "bytes": data}),
                          lambda code, reason: send({"type": "websocket.close", "code": code, "reason": reason}))
        except Exception as exc:  # the connection broke under us
            fail(WebSocketError(f"the connection failed: {exc}"))

    writer = asyncio.get_running_loop().create_task(write())
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = _payload(message)
                size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
                if size > MAX_MESSAGE_BYTES:
                    fail(WebSocketError(f"a message of {size} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"))
                    await send({"type": "websocket.close", "code": MESSAGE_TOO_BIG, "reason": "message too big"})
                    return
                client.send(data)
            elif message["type"] == "websocket.disconnect":
                client.readyState = CLOSED
                if client.peer is not None:
                    client.peer._receive(("close", (message.get("code", 1005), "")))
                return
    finally:
        writer.cancel()


def is_upgrade(request: Request) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket"


def _to_asgi(kind: str, value: Any) -> dict[str, Any]:
    if kind == "close":
        return {"type": "websocket.disconnect", "code": value[0]}
    return {"type": "websocket.receive", "text" if isinstance(value, str) else "bytes": value}


async def asgi_websocket(app: Any, request: Request, client: tuple[str, int] = ("127.0.0.1", 0),
                         extra_scope: dict[str, Any] | None = None) -> Response:
    """Open a WebSocket on an ASGI app in this process: 101 with the client end of a pair once the
    app accepts, or the app's refusal (its HTTP denial response, else 403). `extra_scope`: keys
    only the runtime sets (a service binding's mark)."""
    from ..http import Response

    parts = urlsplit(request.url)
    scope = _websocket_scope(request, client, extra_scope)
    pair = WebSocketPair()
    server = pair.server
    answered: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    denial: dict[str, Any] = {"status": 403, "headers": [], "body": []}
    connected = False

    async def receive() -> dict[str, Any]:
        nonlocal connected
        if not connected:
            connected = True
            return {"type": "websocket.connect"}
        return _to_asgi(*await server.next_outgoing())

    async def send(message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            answered.set_result(Response(None, status=101, web_socket=pair.client))
        elif kind == "websocket.send":
            server.send(_payload(message))
        elif kind == "websocket.close":
            if not answered.done():
                answered.set_result(Response(b"", status=403))
            server.close(message.get("code", 1000), message.get("reason") or "")
        elif kind == "websocket.http.response.start":
            denial.update(status=message["status"], headers=message.get("headers", []))
        elif kind == "websocket.http.response.body":
            denial["body"].append(message.get("body", b""))
            if not message.get("more_body") and not answered.done():
                answered.set_result(Response(b"".join(denial["body"]), status=denial["status"], headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in denial["headers"]]))

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            log.warning("WebSocket handler for %s failed: %s", parts.path, exc)
        finally:
            if not answered.done():
                answered.set_result(Response(b"", status=500))
            elif server.readyState < CLOSING:
                server.close(1011, "the handler ended")

    task = asyncio.get_running_loop().create_task(run())
    pair.client._keepalive = task  # the app runs as long as the socket is used
    return await answered


def _websocket_scope(request: Request, client: tuple[str, int], extra_scope: dict[str, Any] | None) -> dict[str, Any]:
    """The ASGI scope a server would hand the app for this upgrade request."""
    parts = urlsplit(request.url)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
    if not any(k == b"host" for k, _ in headers):
        headers.append((b"host", parts.netloc.encode("latin-1") or b"localhost"))
    protocols = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    return {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "scheme": {"https": "wss"}.get(parts.scheme, "ws"), "path": unquote(parts.path) or "/",
            "raw_path": (parts.path or "/").encode("latin-1"), "query_string": parts.query.encode("latin-1"),
            "root_path": "", "headers": headers, "client": client,
            "server": (parts.hostname or "localhost", parts.port or 80), "subprotocols": protocols,
            "extensions": {"websocket.http.response": {}}, **(extra_scope or {})}


async def connect_remote(session: aiohttp.ClientSession, url: str, headers: list[tuple[str, str]],
                         **options: Any) -> Response:
    """Open a WebSocket to a worker in another process: 101 with the client end of a pair pumped
    to it, or the HTTP answer it refused with. `options` go to aiohttp (`ssl` for another node)."""
    from ..http import Response

    protocols = [p.strip() for k, v in headers if k.lower() == "sec-websocket-protocol" for p in v.split(",")]
    sent = [(k, v) for k, v in headers if k.lower() not in _WS_HANDSHAKE]
    try:
        remote = await session.ws_connect(url, headers=sent, protocols=protocols, autoping=True, max_msg_size=0,
                                          **options)
    except aiohttp.WSServerHandshakeError as exc:
        return Response(b"", status=exc.status or 502, headers=list((exc.headers or {}).items()))
    return joined(remote)


def joined(remote: aiohttp.ClientWebSocketResponse) -> Response:
    """101 with the client end of a pair whose traffic is pumped to and from `remote`."""
    from ..http import Response

    pair = WebSocketPair()
    server = pair.server

    async def from_remote() -> None:
        async for message in remote:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                if server.readyState < CLOSING:
                    server.send(message.data)
            elif message.type == aiohttp.WSMsgType.ERROR:
                break
        if server.readyState < CLOSING:
            server.close(remote.close_code or 1006, "")

    async def to_remote() -> None:
        await forward(server, lambda data: remote.send_str(data) if isinstance(data, str) else remote.send_bytes(data),
                      lambda code, reason: remote.close(code=code, message=(reason or "").encode()))

    pumps = [asyncio.ensure_future(from_remote()), asyncio.ensure_future(to_remote())]
    pumps[0].add_done_callback(lambda _: pumps[1].cancel())
    pair.client._keepalive = pumps
    return Response(None, status=101, web_socket=pair.client)


_WS_HANDSHAKE = frozenset({"upgrade", "connection", "sec-websocket-key", "sec-websocket-version",
                           "sec-websocket-extensions", "sec-websocket-protocol", "host", "content-length"})
