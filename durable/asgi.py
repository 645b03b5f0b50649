"""The ASGI plumbing the runtime shares: a request's scope, one call of an app with a whole body,
a Response as ASGI messages, and the mark a call through a service binding carries."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from .http import Request, Response

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]
BINDING_SCOPE_KEY = "durable.service_binding"  # set on the ASGI scope of a call through a binding in process
THROUGH_BINDING = {BINDING_SCOPE_KEY: True}

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


def http_scope(method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, *,
               client: tuple[str, int] = ("127.0.0.1", 0), extra_scope: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ASGI scope of a request to `url` with `headers` (lowercase names, as bytes): what a
    server would hand the app, Host and Content-Length included."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    names = {k for k, _ in headers}
    if b"host" not in names:
        headers.append((b"host", (parts.netloc or host).encode("latin-1")))
    if body and b"content-length" not in names:
        headers.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": parts.scheme or "http",
        "path": unquote(parts.path) or "/", "raw_path": (parts.path or "/").encode("latin-1"),
        "query_string": parts.query.encode("latin-1"), "root_path": "",
        "headers": headers, "client": client, "server": (host, port), **(extra_scope or {}),
    }


async def call_app(app: ASGIApp, scope: dict[str, Any], body: bytes, send: ASGISend) -> None:
    """Run `app` on one request whose whole body is `body`; it hears of a disconnect once it
    has answered (or failed)."""
    sent_body = finished = False
    waiter: asyncio.Future[None] | None = None  # a bare future, made when the app listens past the body

    def finish() -> None:
        nonlocal finished
        finished = True
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive() -> dict[str, Any]:
        nonlocal sent_body, waiter
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not finished:
            if waiter is None or waiter.done():  # (done: a listener before was cancelled)
                waiter = asyncio.get_running_loop().create_future()
            await waiter
        return {"type": "http.disconnect"}

    async def send_then_finish(message: dict[str, Any]) -> None:
        await send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            finish()

    try:
        await app(scope, receive, send_then_finish)
    finally:
        finish()


async def asgi_fetch(app: ASGIApp, request: Request, client: tuple[str, int] = ("127.0.0.1", 0),
                     extra_scope: dict[str, Any] | None = None) -> Response:
    """Run one request through an ASGI app in this process and collect its response
    (`extra_scope` adds keys to the ASGI scope, as Cloudflare's `asgi.fetch` adds `env`)."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
    scope = http_scope(request.method, request.url, headers, request.body, client=client, extra_scope=extra_scope)
    status = 500
    response_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def collect(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.extend((k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await call_app(app, scope, request.body, collect)
    return Response(b"".join(chunks), status=status, headers=response_headers)


async def send_response(response: Response, send: ASGISend) -> None:
    """A whole Response as ASGI messages."""
    await send({"type": "http.response.start", "status": response.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]})
    await send({"type": "http.response.body", "body": response.body})


def header_map(scope: dict[str, Any]) -> dict[str, str]:
    """A request scope's headers as a dict of lowercase names (a repeated header: its last value)."""
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def through_binding(scope: dict[str, Any]) -> bool:
    """Did this request come through a service binding within this process? No client can send
    one: the mark is a key of the ASGI scope, which only the runtime sets, never a header."""
    return scope.get(BINDING_SCOPE_KEY) is True
