"""The server half of calls between processes: Durable Object RPC and an object's WebSocket
arriving on a worker under `INTERNAL_PREFIX`, checked (signature, audience, nonce, body size)
before any object sees them. The client half is `client.py`; the wire they share, `wire.py`."""
from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from .. import codec, deadline, signing
from ..asgi import header_map
from ..compat.websocket import bridge
from ..errors import NotOwner
from ..http import Request, Response
from ..ids import DurableObjectId
from ..objects import FETCH, LocalTransport, ObjectHost
from ..observe import tracing
from .wire import (
    DEADLINE_HEADER,
    INTERNAL_AUDIENCE_HEADER,
    INTERNAL_PREFIX,
    INTERNAL_REQUEST_HEADER,
    INTERNAL_SIGNATURE_HEADER,
    OBJECT_NAME_HEADER,
    error_body,
)

log = logging.getLogger("durable.worker")
TOLERANCE_S = 60.0  # how old a signed call may be (clocks between nodes differ by less)
MAX_CALL_BYTES = 32 * 1024 * 1024  # one call's serialized arguments: Cloudflare's RPC limit
# what the internal routes act on besides the path and body: each must be signed when it is sent
ACTED_ON = (OBJECT_NAME_HEADER, "traceparent", "x-request-id", DEADLINE_HEADER)
JSON = b"application/json"


class CallTooLarge(ValueError):
    """An internal call's body ran over MAX_CALL_BYTES: refused before it is all read."""


class ObjectCallServer:
    """Answers `INTERNAL_PREFIX` requests for the objects one worker hosts in this process."""

    def __init__(self, worker_name: str, internal_key: str, hosts: dict[str, ObjectHost],
                 budget_s: Callable[[], float]) -> None:
        self.worker_name = worker_name
        self.audience = worker_name  # who calls must be addressed to (in a cluster: where this node serves)
        self.nonces = signing.NonceCache(TOLERANCE_S)  # a signed call is good once here
        self._key = internal_key
        self._hosts = hosts
        self._budget_s = budget_s

    def verify(self, method: str, target: str, body: bytes, headers: dict[str, str]) -> None:
        """A signed internal call, once, addressed to this node: the signature covers the audience
        and every header acted on; a replay here is caught by the nonce cache, one to another node
        by the audience (SignatureError otherwise)."""
        required = [INTERNAL_AUDIENCE_HEADER, *(name for name in ACTED_ON if name in headers)]
        signed = signing.verify(self._key, headers.get(INTERNAL_SIGNATURE_HEADER), method, target, body,
                                header_value=headers.get, required=required, tolerance_s=TOLERANCE_S)
        if headers.get(INTERNAL_AUDIENCE_HEADER) != self.audience:
            raise signing.SignatureError("addressed to another node")
        self.nonces.check_and_remember(signed)

    async def websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A WebSocket `fetch` on one of our objects from another process (`open_object_socket`):
        the object's answer head first, then, for a 101, the socket it accepted."""
        headers = header_map(scope)
        parts = scope["path"][len(INTERNAL_PREFIX):].split("/")
        try:
            payload = base64.urlsafe_b64decode(headers.get(INTERNAL_REQUEST_HEADER, ""))
            self.verify("GET", _raw_path(scope), payload, headers)
            class_name, id_hex, method = (unquote(p) for p in parts)
            host = self._hosts[class_name]
            object_id = _object_id(id_hex, headers)
            request = Request.from_wire(codec.decode(payload)["request"])
        except signing.NonceCacheFull as exc:
            log.error("%s: refused an internal WebSocket for now: %s", self.worker_name, exc)
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        except (ValueError, KeyError, signing.SignatureError) as exc:
            log.warning("%s: refused an internal WebSocket to %s: %s", self.worker_name, scope["path"], exc)
            await send({"type": "websocket.close", "code": 1008})
            return
        response = await _socket_answer(host, object_id, method, request)
        head = codec.encode(response.to_wire())
        if response.status == 101 and response.web_socket is not None:
            await bridge(response.web_socket, receive, send, first=head)
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": head})
        await send({"type": "websocket.close", "code": 1000})

    async def http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Durable Object RPC from another process: POST <INTERNAL_PREFIX><Class>/<id>/<method>."""
        status, body, content_type, extra = await self._answer(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: dict[str, Any], receive: Any) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
        headers = header_map(scope)
        try:
            body = await _read_body(receive)
            self.verify(scope["method"], _raw_path(scope), body, headers)
        except CallTooLarge as exc:
            return 413, error_body("payload_too_large", str(exc)), JSON, []
        except signing.SignatureError as exc:
            return 401, error_body("unauthorized", f"internal calls are signed with the runtime's key: {exc}"), JSON, []
        except signing.NonceCacheFull as exc:  # fail closed, and say it passes
            log.error("%s: refused an internal call for now: %s", self.worker_name, exc)
            return 503, error_body("replay_guard_full", str(exc)), JSON, [(b"retry-after", b"1")]
        parts = scope["path"][len(INTERNAL_PREFIX):].split("/")
        if scope["method"] != "POST" or len(parts) != 3:
            return 404, error_body("not_found", "unknown internal route"), JSON, []
        class_name, id_hex, method = (unquote(p) for p in parts)
        host = self._hosts.get(class_name)
        if host is None:
            return 404, error_body("not_found", f"{self.worker_name} hosts no Durable Object class {class_name!r}"), JSON, []
        try:
            object_id = _object_id(id_hex, headers)
        except ValueError as exc:
            return 400, error_body("invalid_id", str(exc)), JSON, []
        if host.guard is not None:
            try:
                await host.guard(object_id)
            except NotOwner as exc:  # the caller's placement is stale: it re-reads members and retries
                return 421, error_body("not_owner", str(exc)), JSON, []
        trace_token = tracing.use(tracing.TraceContext.of_caller(headers))
        try:
            with deadline.within(deadline.budget_from(headers, self._budget_s())):
                result = await LocalTransport(host).call(object_id, method, body)
        finally:
            tracing.reset(trace_token)
        return 200, result, b"application/bson", []


async def _socket_answer(host: ObjectHost, object_id: DurableObjectId, method: str, request: Request) -> Response:
    """The object's answer to a WebSocket fetch; a move (421) or a failure as an answer too."""
    try:
        if method != FETCH:
            raise ValueError(f"only fetch() takes a WebSocket, not {method}()")
        if host.guard is not None:
            await host.guard(object_id)
        return await host.invoke(object_id, FETCH, [request], {})
    except NotOwner as exc:
        return Response(error_body("not_owner", str(exc)), status=421)
    except Exception as exc:  # noqa: BLE001 - the caller gets it as an answer, as from any object
        return Response(error_body("object_failed", f"{type(exc).__name__}: {exc}"), status=500,
                        headers={"content-type": "application/json"})


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_CALL_BYTES:
            raise CallTooLarge(f"an internal call carries at most {MAX_CALL_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _raw_path(scope: dict[str, Any]) -> str:
    return (scope.get("raw_path") or scope["path"].encode("latin-1")).decode("latin-1")


def _object_id(id_hex: str, headers: dict[str, str]) -> DurableObjectId:
    name = headers.get(OBJECT_NAME_HEADER)
    return DurableObjectId(id_hex, unquote(name) if name is not None else None)
