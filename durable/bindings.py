"""Service bindings: `env.SERVICE.fetch(...)` calls the target worker's ASGI app directly when it
runs in this process, or over HTTP (`rpc.client.HttpClient`, one shared session) when it runs
elsewhere, round robin over its nodes with a per-node breaker; the caller gets the same
`Response` either way."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from . import deadline
from .asgi import (
    THROUGH_BINDING,
    ASGIApp,
    ASGISend,
    asgi_fetch,
    call_app,
    http_scope,
    send_response,
)
from .compat.websocket import asgi_websocket, connect_remote, is_upgrade
from .http import Request, Response, make_request
from .objects import current_object
from .observe import otel, tracing
from .observe.metrics import BindingMeter, method_label
from .rpc.client import HttpClient, RemoteTarget, Signer, addressed, ws_url
from .rpc.wire import SIGN_AGAIN_HEADER, UNREACHABLE_HEADER

Resolver = Callable[[], "ASGIApp | RemoteTarget | list[RemoteTarget] | None"]

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
                return await asgi_websocket(target, request, extra_scope=THROUGH_BINDING)
            if isinstance(target, list):
                return await self._send_to_one_of(target, request, sign)
            return await asgi_fetch(target, request, extra_scope=THROUGH_BINDING)
        finally:
            if caller is not None:
                await caller.input_gate.enter()

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
                response = await self._http.send(addressed(request, target, sign), target.url, internal=target.internal)
                if sign is not None and response.status == 401 and SIGN_AGAIN_HEADER in response.headers:
                    # the node started after we signed (the call waited out a reload in its queue) and
                    # refused it unread: signed anew, it goes once more
                    response = await self._http.send(addressed(request, target, sign), target.url,
                                                      internal=target.internal)
                    response.headers.popall(SIGN_AGAIN_HEADER, None)
                return response
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
        url = ws_url(target, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
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
        extra = THROUGH_BINDING if trace is None else {**THROUGH_BINDING, tracing.SCOPE_KEY: trace}
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
