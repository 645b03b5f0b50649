"""Service bindings and the HTTP transport for Durable Objects hosted by another process.

`env.SERVICE.fetch(...)` calls the target worker's ASGI app directly when it runs in this
process, or over HTTP (one shared aiohttp session, so connections are reused) when it runs
elsewhere; the caller gets the same `Response` either way.
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from . import codec, deadline, signing
from .compat.websocket import asgi_websocket, connect_remote, is_upgrade, joined
from .observe import otel, tracing
from .observe.metrics import BindingMeter, method_label
from .errors import NotDelivered, NotOwner, ObjectUnavailable
from .http import Request, Response, make_request
from .ids import DurableObjectId
from .objects import current_object
from .rpc.wire import (INTERNAL_AUDIENCE_HEADER, INTERNAL_PREFIX, INTERNAL_REQUEST_HEADER,
                       INTERNAL_SIGNATURE_HEADER, OBJECT_NAME_HEADER, UNREACHABLE_HEADER)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]

BINDING_SCOPE_KEY = "durable.service_binding"  # set on the ASGI scope of a call through a binding in process
_THROUGH_BINDING = {BINDING_SCOPE_KEY: True}
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"})


@dataclass(frozen=True)
class RemoteTarget:
    """A worker running in another process: its base URL, the key for internal calls, and who the
    calls are for (its node id in a cluster, else its worker name), signed into each one so a
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


def through_binding(scope: dict[str, Any]) -> bool:
    """Did this request come through a service binding within this process? No client can send
    one: the mark is a key of the ASGI scope, which only the runtime sets, never a header."""
    return scope.get(BINDING_SCOPE_KEY) is True


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


Resolver = Callable[[], "ASGIApp | RemoteTarget | list[RemoteTarget] | None"]
# signs a request leaving the process, given the headers it leaves with: the headers to add
Signer = Callable[[list[tuple[str, str]]], list[tuple[str, str]]]


def addressed(request: Request, target: RemoteTarget, sign: Signer | None) -> Request:
    """`request` as it leaves for `target`: the node (or worker) it is for named in its
    audience header, and signed by `sign` over that too, so it is good on that node only."""
    headers = [(k, v) for k, v in request.headers.items() if k.lower() != INTERNAL_AUDIENCE_HEADER]
    headers.append((INTERNAL_AUDIENCE_HEADER, target.audience))
    if sign is not None:
        headers += sign(headers)
    return Request(request.url, method=request.method, headers=headers, body=request.body)


SKIP_UNREACHABLE_S = 5.0  # a node that refused a connection is left out this long (a per-node breaker)


class ServiceBinding:
    """`env.BASE_SERVICE`: fetch() into another worker, wherever it runs."""

    def __init__(self, service: str, resolve: Resolver, http: HttpClient, caller: str = "",
                 metrics_on: bool = False) -> None:
        self.service = service
        self._resolve = resolve
        self._http = http
        self._turn = 0
        self._unreachable: dict[str, float] = {}  # node URL → until when it is skipped
        self._meter = BindingMeter(caller, service) if metrics_on else None

    async def fetch(self, input: Request | str, *, sign: Signer | None = None, **init: Any) -> Response:
        """Cloudflare's `fetch()`; `sign` signs it when it leaves the process (per target node)."""
        spans = otel.active()
        if spans is not None and tracing.current() is not None:  # a client span; the callee is its child
            method = method_label(str(init.get("method") or getattr(input, "method", "GET")).upper())
            with otel.child_span(f"{self.service} {method}", "client", {"cloudflare.service": self.service,
                                                                        "http.request.method": method}) as span:
                response = await self._measured(input, sign, init)
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    otel.mark_failed(span)
                return response
        return await self._measured(input, sign, init)

    async def _measured(self, input: Request | str, sign: Signer | None, init: dict[str, Any]) -> Response:
        if self._meter is None:
            return await self._fetch(input, sign, init)
        started = time.perf_counter()
        try:
            response = await self._fetch(input, sign, init)
        except asyncio.CancelledError:  # the caller went away: not the service's doing, not counted
            raise
        except Exception:
            self._meter.observe("failed", started)
            raise
        self._meter.answered(response.status, started, unreachable=UNREACHABLE_HEADER in response.headers)
        return response

    async def _fetch(self, input: Request | str, sign: Signer | None, init: dict[str, Any]) -> Response:
        request = make_request(input, f"http://{self.service}/", **init)
        trace = tracing.current()
        if trace is not None:
            for name, value in trace.outgoing().items():
                request.headers[name] = value
        target = self._resolve()
        if not callable(target):  # leaving the process: the callee learns how long we will wait
            for name, value in deadline.outgoing().items():
                request.headers[name] = value
        if target is None:
            return Response.json_response(
                {"message": f"Service {self.service} is not running",
                 "error": {"code": "service_unavailable",
                           "message": f"No local dev session for the {self.service!r} service was found; "
                                      f"start it with `wrangler dev` in its folder"}}, status=503)
        caller = current_object()
        if caller is not None:
            await caller.storage.sync()
        try:
            if isinstance(target, RemoteTarget):
                target = [target]
            if is_upgrade(request):  # a WebSocket: 101 with the client end, wherever the worker runs
                if isinstance(target, list):
                    return await self._connect_to_one_of(target, request, sign)
                return await asgi_websocket(target, request, extra_scope=_THROUGH_BINDING)
            if isinstance(target, list):
                return await self._send_to_one_of(target, request, sign)
            return await asgi_fetch(target, request, extra_scope=_THROUGH_BINDING)
        finally:
            if caller is not None:
                await caller._gate.enter()

    async def _send_to_one_of(self, targets: list[RemoteTarget], request: Request, sign: Signer | None) -> Response:
        """Round robin over the service's nodes on this host (over all of them when none is here);
        one that refuses the connection is skipped for a while and the request goes to the next (it
        never reached the first, so this is safe). A call cut mid-way may have run: it is not sent
        again, and the answer is a retryable 503."""
        now = time.monotonic()
        reachable = [t for t in targets if self._unreachable.get(t.url, 0.0) <= now]
        usable = [t for t in reachable if t.near] or reachable or targets
        self._turn += 1
        error: Exception | None = None
        refused = True
        for i in range(len(usable)):
            target = usable[(self._turn + i) % len(usable)]
            try:
                return await self._http.send(addressed(request, target, sign), target.url, internal=target.internal)
            except aiohttp.ClientConnectorError as exc:
                self._unreachable[target.url] = time.monotonic() + SKIP_UNREACHABLE_S
                error = exc
                if self._meter is not None and i + 1 < len(usable):
                    self._meter.retries.inc()  # sent again, to the next node: it never reached this one
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error, refused = exc, False
                break  # it may have been received: not ours to send twice
        return Response.json_response(
            {"message": f"Service {self.service} is unreachable",
             "error": {"code": "upstream_unavailable", "message": f"{type(error).__name__}: {error}"}},
            status=503, headers={"Retry-After": "1", **({UNREACHABLE_HEADER: "1"} if refused else {})})

    async def _connect_to_one_of(self, targets: list[RemoteTarget], request: Request,
                                 sign: Signer | None) -> Response:
        self._turn += 1
        target = targets[self._turn % len(targets)]
        parts = urlsplit(request.url)
        url = _ws_url(target, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        try:
            return await connect_remote(self._http.session, url, list(addressed(request, target, sign).headers.items()),
                                        **(self._http.internal_options() if target.internal else {}))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return Response.json_response(
                {"message": f"Service {self.service} is unreachable",
                 "error": {"code": "upstream_unavailable", "message": f"{type(exc).__name__}: {exc}"}}, status=502)

    async def forward(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                      send: ASGISend, *, credentials: Signer | None = None) -> None:
        """fetch() for a proxy: the answer goes to `send` as ASGI messages. To a worker in this
        process nothing is built in between (no Request, no Response); `headers` are (lowercase
        name, value) bytes. `credentials` signs what leaves this process (for the node it goes
        to): a call within it cannot be forged, and says so in its scope."""
        target = self._resolve()
        # elsewhere, absent, from an object, or traced (fetch() makes the client span): through fetch()
        if not callable(target) or current_object() is not None or otel.active() is not None:
            request = Request(url, method=method, headers=[(k.decode("latin-1"), v.decode("latin-1"))
                                                           for k, v in headers], body=body)
            await send_response(await self.fetch(request, sign=credentials), send)
            return
        trace = tracing.current()  # handed over as it is: no headers to format here and parse there
        extra = _THROUGH_BINDING if trace is None else {**_THROUGH_BINDING, tracing.SCOPE_KEY: trace}
        meter = self._meter
        if meter is None:
            await call_app(target, http_scope(method, url, headers, body, extra_scope=extra), body, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_seen(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await call_app(target, http_scope(method, url, headers, body, extra_scope=extra), body, send_seen)
        except asyncio.CancelledError:
            raise
        except Exception:
            meter.observe("failed", started)
            raise
        meter.answered(status, started)

    def __repr__(self) -> str:
        return f"<ServiceBinding {self.service}>"


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


def _ws_url(target: RemoteTarget, path: str) -> str:
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
    url = _ws_url(target, path)
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
