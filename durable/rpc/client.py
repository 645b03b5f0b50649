"""The client half of calls between processes: where a worker elsewhere is (`RemoteTarget`), the
one HTTP client a runtime shares, and Durable Object RPC and WebSockets to an object hosted
elsewhere, signed for the node they go to. The server half is `server.py`."""
from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from .. import codec, deadline, signing
from ..compat.websocket import joined
from ..errors import NotDelivered, NotOwner, ObjectUnavailable
from ..http import HOP_BY_HOP, Request, Response
from ..ids import DurableObjectId
from ..observe import tracing
from .wire import (
    INTERNAL_AUDIENCE_HEADER,
    INTERNAL_PREFIX,
    INTERNAL_REQUEST_HEADER,
    INTERNAL_SIGNATURE_HEADER,
    OBJECT_NAME_HEADER,
)

# signs a request leaving the process, given the headers it leaves with: the headers to add
Signer = Callable[[list[tuple[str, str]]], list[tuple[str, str]]]


@dataclass(frozen=True)
class RemoteTarget:
    """A worker running in another process: its base URL, the key for internal calls, and who the
    calls are for (in a cluster the URL that node serves the worker at, else the worker's name), signed into each one so a
    captured call replayed to another node is refused there."""

    url: str
    internal_key: str
    audience: str = ""
    near: bool = False  # on this host (a binding prefers these)
    internal: bool = False  # `url` is the worker's internal listener: mutual TLS, when configured


def internal_headers(target: RemoteTarget, method: str, path: str, payload: bytes, object_id: DurableObjectId,
                     extra: dict[str, str] | None = None) -> dict[str, str]:
    """The signed headers of an object call to `target`: the signature covers the audience, the
    object's name and every `extra` header (the trace context), as well as the method, path and body."""
    headers = {INTERNAL_AUDIENCE_HEADER: target.audience, **(extra or {})}
    if object_id.name is not None:
        headers[OBJECT_NAME_HEADER] = quote(object_id.name)
    headers[INTERNAL_SIGNATURE_HEADER] = signing.sign(target.internal_key, method, path, payload,
                                                      headers=headers.items())
    return headers


class HttpClient:
    """One aiohttp session per runtime, created on first use."""

    def __init__(self, timeout_s: float = 30.0) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.internal_ssl: ssl.SSLContext | None = None  # our certificate for object calls, with mutual TLS

    def internal_options(self) -> dict[str, Any]:
        """aiohttp options for a call to another node's internal listener."""
        return {"ssl": self.internal_ssl} if self.internal_ssl is not None else {}

    def timeout(self) -> aiohttp.ClientTimeout:
        """A call's bound: what the current request has left, at most the client's own limit."""
        limit = self._timeout.total or deadline.DEFAULT_BUDGET_S
        return aiohttp.ClientTimeout(total=max(min(deadline.remaining(limit), limit), deadline.MIN_BUDGET_S))

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, auto_decompress=False,
                                                  connector=aiohttp.TCPConnector(limit=256))
        return self._session

    async def send(self, request: Request, base_url: str | None = None, *, internal: bool = False) -> Response:
        """`internal`: `base_url` is another node's internal listener (our certificate, their CA)."""
        url = request.url
        if base_url is not None:
            parts = urlsplit(request.url)
            url = base_url.rstrip("/") + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"]
        async with self.session.request(request.method, url, headers=headers, data=request.body or None,
                                        allow_redirects=False, timeout=self.timeout(),
                                        **(self.internal_options() if internal else {})) as resp:
            body = await resp.read()
            return Response(body, status=resp.status,
                            headers=[(k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def addressed(request: Request, target: RemoteTarget, sign: Signer | None) -> Request:
    """`request` as it leaves for `target`: the node (or worker) it is for named in its
    audience header, and signed by `sign` over that too, so it is good on that node only."""
    headers = [(k, v) for k, v in request.headers.items() if k.lower() != INTERNAL_AUDIENCE_HEADER]
    headers.append((INTERNAL_AUDIENCE_HEADER, target.audience))
    if sign is not None:
        headers += sign(headers)
    return Request(request.url, method=request.method, headers=headers, body=request.body)


class HttpTransport:
    """Durable Object RPC to a class hosted by another worker process."""

    def __init__(self, script_name: str, class_name: str, resolve: Callable[[], RemoteTarget | None],
                 http: HttpClient) -> None:
        self.script_name = script_name
        self.class_name = class_name
        self._resolve = resolve
        self._http = http

    def _target(self) -> RemoteTarget:
        target = self._resolve()
        if target is None:
            raise ObjectUnavailable(f"{self.script_name} (host of {self.class_name}) is not running")
        return target

    async def call(self, object_id: DurableObjectId, method: str, payload: bytes) -> bytes:
        return await post_object_call(self._http, self._target(), self.script_name, self.class_name, object_id,
                                      method, payload)

    async def connect(self, object_id: DurableObjectId, request: Request) -> Response:
        return await open_object_socket(self._http, self._target(), self.class_name, object_id, request)


def ws_url(target: RemoteTarget, path: str) -> str:
    """`path` on `target` as a WebSocket URL (ws:// for http://, wss:// for https://)."""
    return target.url.replace("http", "ws", 1).rstrip("/") + path


async def open_object_socket(http: HttpClient, target: RemoteTarget, class_name: str, object_id: DurableObjectId,
                             request: Request) -> Response:
    """`stub.fetch()` of a WebSocket upgrade on an object in another process: the object's answer,
    and when it is a 101, the client end of a pair joined to the socket the object accepted there.

    The internal route accepts, sends the answer's head (status, headers, body) as the first
    message, and then carries the socket's traffic; 421 raises NotOwner, as for calls.
    """
    path = f"{INTERNAL_PREFIX}{quote(class_name)}/{object_id}/fetch"
    payload = codec.encode({"request": request.to_wire()})
    headers = {**internal_headers(target, "GET", path, payload, object_id),
               INTERNAL_REQUEST_HEADER: base64.urlsafe_b64encode(payload).decode()}
    url = ws_url(target, path)
    try:
        remote = await http.session.ws_connect(url, headers=headers, max_msg_size=0, **http.internal_options())
    except aiohttp.ClientConnectorError as exc:
        raise NotDelivered(f"{class_name} at {target.url} is unreachable: {exc}") from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ObjectUnavailable(f"{class_name} at {target.url} refused the WebSocket: {exc}") from None
    head = await remote.receive()
    if head.type != aiohttp.WSMsgType.BINARY:
        await remote.close()
        raise ObjectUnavailable(f"{class_name} at {target.url} closed the WebSocket before answering")
    answer = codec.decode(head.data)
    if answer["status"] == 421:
        await remote.close()
        raise NotOwner(f"{target.url} does not own this {class_name}")
    if answer["status"] != 101:
        await remote.close()
        return Response.from_wire(answer)
    return joined(remote)


async def post_object_call(http: HttpClient, target: RemoteTarget, script_name: str, class_name: str,
                           object_id: DurableObjectId, method: str, payload: bytes) -> bytes:
    """One signed object call to the process at `target`; its serialized reply.

    421 (the node there does not own the object) raises NotOwner, so a cluster caller re-routes.
    """
    path = f"{INTERNAL_PREFIX}{quote(class_name)}/{object_id}/{quote(method)}"
    url = target.url.rstrip("/") + path
    trace = tracing.current()
    extra = {**(trace.outgoing() if trace is not None else {}), **deadline.outgoing()}
    headers = {**internal_headers(target, "POST", path, payload, object_id, extra),
               "content-type": "application/bson"}
    try:
        async with http.session.post(url, data=payload, headers=headers, timeout=http.timeout(),
                                     **http.internal_options()) as resp:
            body = await resp.read()
            if resp.status == 421:
                raise NotOwner(f"{target.url} does not own this {class_name}")
            if resp.status != 200:
                raise ObjectUnavailable(f"{script_name}.{class_name}: HTTP {resp.status}: "
                                        f"{body[:200].decode('utf-8', 'replace')}")
            return body
    except aiohttp.ClientConnectorError as exc:  # no connection: the call never left
        raise NotDelivered(f"{script_name} (host of {class_name}) at {target.url} is unreachable: {exc}") from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # it may have run: not ours to resend
        raise ObjectUnavailable(f"{script_name} (host of {class_name}) at {target.url} failed mid-call: {exc}") from None
