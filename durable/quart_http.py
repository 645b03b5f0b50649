"""Quart's HTTP connection, one task per request (installed on every Quart app the runtime serves).

Quart runs each request as two tasks, the handler and a reader of the body and the disconnect,
waits on both, then sends the answer under `asyncio.wait_for` (a third task) in three messages.
A request whose body is already whole when it starts (all but streamed uploads) needs none of
that: it is handled in the server's task, its timeout is a timer, and an answer held in memory
goes out as one message. Measured on a Quart JSON hello in process: ARCHITECTURE.md, "The HTTP
server". A streamed upload keeps Quart's own way.

What changes: a client that goes away while its request is handled no longer cancels the
handler; it finishes (its answer is dropped), as a Worker's work is not cut mid-write on
Cloudflare either. The deadline of the request still bounds it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart
from quart.asgi import ASGIHTTPConnection, _handle_exception
from quart.utils import encode_headers
from quart.wrappers import base as quart_wrappers_base
from quart.wrappers.response import DataBody, Response

_DISCONNECTED: type[Exception] | None = getattr(quart_wrappers_base, "ClientDisconnectedError", None)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class OneTaskHTTPConnection(ASGIHTTPConnection):
    async def __call__(self, receive: Receive, send: Send) -> None:  # type: ignore[override]
        first = await receive()
        if first["type"] != "http.request" or first.get("more_body", False):
            await super().__call__(_replaying(first, receive), send)  # type: ignore[arg-type]
            return
        request = self._create_request_from_scope(send)  # type: ignore[arg-type]
        request.body.set_result(first.get("body", b""))  # the same call in Quart 0.22 and 0.23 (3.13)
        await self.handle_request(request, send)  # type: ignore[arg-type]

    async def handle_request(self, request: Any, send: Send) -> None:  # type: ignore[override]
        try:
            response = await self.app.handle_request(request)
        except Exception as error:
            if _DISCONNECTED is not None and isinstance(error, _DISCONNECTED):
                return  # Quart 0.23: the client went away (its own connection answers nothing either)
            response = await _handle_exception(self.app, error)
        if isinstance(response, Response) and response.timeout != Ellipsis:
            timeout = response.timeout
        else:
            timeout = self.app.config["RESPONSE_TIMEOUT"]
        try:
            async with asyncio.timeout(timeout):
                await self._send_response(send, response)  # type: ignore[arg-type]
        except TimeoutError:
            pass

    async def _send_response(self, send: Send, response: Any) -> None:  # type: ignore[override]
        body = response.response if isinstance(response, Response) else None
        if type(body) is not DataBody:  # a streamed body, a file, or not Quart's Response
            await super()._send_response(send, response)  # type: ignore[arg-type]
            return
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": encode_headers(response.headers)})
        await send({"type": "http.response.body", "body": body.data[body.begin:body.end], "more_body": False})


def _replaying(first: dict[str, Any], receive: Receive) -> Receive:
    """`receive`, with a message already taken from it given back first."""
    pending: list[dict[str, Any]] = [first]

    async def replay() -> dict[str, Any]:
        return pending.pop() if pending else await receive()
    return replay


def serve_in_one_task(app: Any) -> None:
    """Install the connection on a Quart app (another app is left as it is)."""
    if isinstance(app, Quart) and app.asgi_http_class is ASGIHTTPConnection:
        app.asgi_http_class = OneTaskHTTPConnection  # type: ignore[misc]
