"""Which routes a listener serves. In production each worker process listens twice: its public
listener (clients, and the gateway on the same host when it has no internal address for us)
never serves the runtime's internal routes, and its internal listener (`--internal-ip`, mutual
TLS when configured) takes what other processes and nodes send: Durable Object calls and
service-binding forwards (which carry users' tokens and payment bodies, so they go where TLS
is). A captured or forged internal call cannot even be sent to a public port, and the internal
port can be firewalled to the other nodes.
"""
from __future__ import annotations

import json
from typing import Any

from ..asgi import ASGIApp
from .wire import INTERNAL_PREFIX

_NOT_HERE = json.dumps({"message": "Not found", "error": {"code": "not_found", "message": "Not found"}}).encode()


async def _refuse(scope: dict[str, Any], send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": _NOT_HERE})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 404,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "websocket.http.response.body", "body": _NOT_HERE})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _internal(scope: dict[str, Any]) -> bool:
    return str(scope.get("path", "")).startswith(INTERNAL_PREFIX)


def public_only(app: ASGIApp) -> ASGIApp:
    """`app` as the public listener serves it: every route but the internal ones (404)."""
    async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan" and _internal(scope):
            await _refuse(scope, send)
            return
        await app(scope, receive, send)
    return serve
