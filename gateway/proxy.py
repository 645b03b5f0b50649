"""The forwarding path, at the ASGI level: a proxy pays for no web framework of its own.

Per request: CORS preflight → rate limit (a RateLimiter object per service, route class and
client, or this node's allowance of it) → edge cache for public catalogue reads → circuit breaker
→ forward through the service binding (signed when it leaves the process), its answer relayed
as it comes unless the cache keeps it. Errors have the envelope of ARCHITECTURE.md, API conventions.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from multidict import CIMultiDict

from durable import ObjectUnavailable, Request, env
from durable.compat.websocket import bridge
from durable.http import HOP_BY_HOP, http_scheme
from durable.rpc.wire import INTERNAL_HEADERS, UNREACHABLE_HEADER
from models.errors import error_body
from web.errors import ApiError, object_unavailable
from web.service_auth import CALLER_HEADER, CLIENT_IP_HEADER, signer

from . import cache as edge_cache
from . import metrics
from .allowances import QUOTA_HEADERS, Quota, Refused
from .breakers import CircuitBreaker
from .cors import add_vary, cors_headers, vary_with
from .edge import Edge, edge
from .limits import client_key, limit_for, route_class
from .routing import UPSTREAMS, route, route_template

MAX_BODY_BYTES = 8 * 1024 * 1024
log = logging.getLogger("rest_shop.gateway")
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar: everything else in a (decoded) path is escaped again
_HOP_BY_HOP = HOP_BY_HOP | {"content-length", "remote-addr", UNREACHABLE_HEADER}
# the gateway sets these itself: a client's own would be believed by someone downstream
_NOT_FROM_CLIENTS = frozenset({"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded",
                               "x-real-ip", "true-client-ip", "cf-connecting-ip", "x-gateway-signature",
                               CALLER_HEADER, *INTERNAL_HEADERS})
_DROP_INBOUND = frozenset(name.encode() for name in _HOP_BY_HOP | _NOT_FROM_CLIENTS | {
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
# a relayed answer keeps its Content-Length: its body reaches the client as the service sent it
UNREACHABLE_BYTES = UNREACHABLE_HEADER.encode()
_HOP_BY_HOP_RELAYED = frozenset(h.encode() for h in HOP_BY_HOP | {"remote-addr", UNREACHABLE_HEADER})
_REPLACED_BY_QUOTA = _HOP_BY_HOP_RELAYED | QUOTA_HEADERS
_DROP_CACHED = _HOP_BY_HOP | {"x-request-id", "cache-control", "etag"}


@dataclass
class Incoming:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercase names; a repeated header's first value, as a proxy reads it
    peer: str
    scheme: str
    raw_headers: list[tuple[bytes, bytes]]  # as the server gave them: lowercase names, bytes
    edge: Edge
    body: bytes = b""

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    @property
    def from_trusted_proxy(self) -> bool:
        """The peer is a proxy named in TRUSTED_PROXIES (none by default: clients reach us directly)."""
        return self.peer in self.edge.trusted_proxies

    @property
    def client_ip(self) -> str:
        """The client's address: the peer, or, behind a trusted proxy, the last address that proxy
        saw (the rightmost X-Forwarded-For entry; anything left of it is the client's own word)."""
        forwarded_for = self.headers.get("x-forwarded-for")  # (a plain property: it costs less than a cache)
        if forwarded_for and self.from_trusted_proxy:
            try:
                return str(ipaddress.ip_address(forwarded_for.split(",")[-1].strip()))
            except ValueError:
                pass
        return self.peer


@dataclass
class Outgoing:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    web_socket: Any = None  # an accepted WebSocket upgrade: the client end to join to the caller


def _incoming(scope: dict[str, Any], method: str) -> Incoming:
    raw = scope["headers"]
    headers: dict[str, str] = {}
    for name, value in raw:  # ASGI names are lowercase already
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return Incoming(method, scope["path"], scope.get("query_string", b"").decode("latin-1"), headers,
                    (scope.get("client") or ("", 0))[0], http_scheme(scope), raw, edge(env))


def _object_away(exc: ObjectUnavailable) -> ApiError:
    log.warning("gateway: an object was unavailable: %s", exc)
    return object_unavailable()


def _error_reply(exc: ApiError) -> Outgoing:
    return Outgoing(exc.status, CIMultiDict({"content-type": "application/json", **exc.headers}),
                    json.dumps(error_body(exc.code, exc.message, exc.details)).encode())


async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = route_template(scope["path"])
    incoming = _incoming(scope, scope["method"])
    try:
        incoming.body = await read_body(receive)
        reply = await proxy(incoming, send)
    except ApiError as exc:
        reply = _error_reply(exc)
    except ObjectUnavailable as exc:  # a rate-limit bucket's node went away mid-call: retryable, never a 500
        reply = _error_reply(_object_away(exc))
    if reply is None:  # the service's answer went to the client as it came
        return
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": with_cors(incoming, headers)})
    await send({"type": "http.response.body", "body": b"" if incoming.method == "HEAD" else reply.body})


async def handle_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A WebSocket upgrade goes the way of a GET (rate limit, breaker, signed forward); once the
    service accepts it, the two connections are joined. A refusal reaches the client as the
    service's (or our) HTTP error answer where the server can send one, else as a close."""
    scope["route"] = route_template(scope["path"])
    incoming = _incoming(scope, "GET")
    try:
        upstream, path = route(incoming.path)
        quota = await rate_limit(incoming, upstream, path, websocket=True)
        reply = await send_upstream(incoming, upstream, path, b"", websocket=True)
        if quota is not None:
            reply.headers.update(quota.headers())
    except ApiError as exc:
        reply = _error_reply(exc)
    except ObjectUnavailable as exc:
        reply = _error_reply(_object_away(exc))
    if reply.web_socket is not None:
        await bridge(reply.web_socket, receive, send)
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": reply.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]})
        await send({"type": "websocket.http.response.body", "body": reply.body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "The client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"Request bodies are limited to {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def proxy(incoming: Incoming, send: Any) -> Outgoing | None:
    """The answer to send, or None when the service's answer was relayed to `send` itself."""
    if incoming.method == "OPTIONS" and "access-control-request-method" in incoming.headers:
        return preflight(incoming)
    upstream, path = route(incoming.path)
    quota = await rate_limit(incoming, upstream, path)
    state = incoming.edge
    if edge_cache.is_cacheable_request(incoming.method, path, incoming.headers):
        stored, outcome = await state.cache.fetch(edge_cache.cache_key(path, incoming.query),
                                                  lambda: cacheable_forward(incoming, upstream, path))
        metrics.CACHE.labels(outcome.lower()).inc()
        reply = from_cache(incoming, stored, outcome)
    else:
        status = await relay_upstream(incoming, upstream, path, quota, send)
        if edge_cache.is_catalogue_write(incoming.method, path) and status < 400:
            state.cache.purge("/products")
        return None
    if quota is not None:
        reply.headers.update(quota.headers())
    return reply


def preflight(incoming: Incoming) -> Outgoing:
    allowed = cors_headers(incoming.headers.get("origin"), incoming.edge.allowed_origins, preflight=True,
                           requested_headers=incoming.headers.get("access-control-request-headers"))
    if allowed is None:
        raise ApiError(403, "cors_forbidden", "This origin may not call the API")
    return Outgoing(204, CIMultiDict(allowed), b"")


async def rate_limit(incoming: Incoming, upstream: str, path: str, websocket: bool = False) -> Quota | None:
    """Spend one token from the caller's bucket for this service and route class (from this
    node's allowance of it when it holds one), or 429."""
    kind = route_class(incoming.method, path, websocket)
    limit = limit_for(incoming.edge.rate_limits, upstream, kind)
    if limit is None:
        return None
    who = client_key(incoming.headers.get("authorization"), incoming.client_ip, incoming.edge.jwt_key)
    key = f"{upstream}:{kind}:{who}"
    allowances = incoming.edge.allowances
    quota = allowances.spend(key, limit)
    if quota is None:
        ns = env.RATE_LIMITER
        try:
            quota = await allowances.take(key, limit, ns.get(ns.id_from_name(key)).take)
        except Refused as refused:
            metrics.RATE_LIMITED.labels(upstream, kind).inc()
            raise ApiError(429, "rate_limited", "Too many requests; slow down", headers=refused.headers()) from None
    return quota


def _admit(incoming: Incoming, upstream: str) -> CircuitBreaker:
    """The upstream's breaker, when it lets a request through; 503 at once while it is open."""
    breaker = incoming.edge.breakers[upstream]
    wait = breaker.admit()
    if wait is not None:
        raise ApiError(503, "upstream_unavailable", f"The {upstream} service is unavailable; retry later",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return breaker


def _forward(incoming: Incoming, upstream: str, path: str, websocket: bool = False
             ) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The URL and headers (as bytes) of the forward: the client's own minus what only we may
    set, and the client's address and scheme as we saw them."""
    headers = [(k, v) for k, v in incoming.raw_headers if k.lower() not in _DROP_INBOUND]
    trusted = incoming.from_trusted_proxy
    chain = [incoming.headers.get("x-forwarded-for", "") if trusted else "", incoming.peer]
    ours = [("x-forwarded-for", ", ".join(part for part in chain if part)),
            ("x-forwarded-proto", incoming.headers.get("x-forwarded-proto", incoming.scheme) if trusted
             else incoming.scheme),
            (CLIENT_IP_HEADER.lower(), incoming.client_ip)]
    if trusted and "x-forwarded-host" in incoming.headers:
        ours.append(("x-forwarded-host", incoming.headers["x-forwarded-host"]))
    if websocket:
        ours.append(("upgrade", "websocket"))
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in ours]
    url = f"http://{upstream}{quote(path, safe=PATH_SAFE)}" + (f"?{incoming.query}" if incoming.query else "")
    return url, headers


def _signer(incoming: Incoming, path: str, body: bytes) -> Callable[[list[tuple[str, str]]], list[tuple[str, str]]]:
    """The forward's signature, over the target as the service will see it."""
    return signer(incoming.method, path + (f"?{incoming.query}" if incoming.query else ""), body)


def _judge(breaker: CircuitBreaker, upstream: str, status: int, content_type: str, retry_after: bool = False,
           unreachable: bool = False) -> None:
    """Tell the breaker how the service did; a 5xx that is not our error shape becomes a 502.
    A 503 in our shape with Retry-After is the service answering that something behind it (an
    object moving to another node, its database) is away for a moment: the service itself is up,
    so it neither counts against it nor closes its circuit (else one node leaving would open the
    circuit of a service this gateway reaches in its own process). Only no node of the service
    taking the connection at all (`unreachable`, the binding's own answer) counts against it."""
    ours = content_type.startswith("application/json")  # our error envelope
    if status < 500 or status == 501:
        breaker.succeeded()
        return
    if status == 503 and ours and retry_after and not unreachable:
        return
    breaker.failed()
    if not ours:
        raise ApiError(502, "bad_gateway", f"The {upstream} service failed")


def _timed_out(breaker: CircuitBreaker, upstream: str, timeout_s: float) -> ApiError:
    breaker.failed()
    return ApiError(504, "upstream_timeout", f"The {upstream} service did not answer within {timeout_s:g} s",
                    headers={"Retry-After": "1"})


async def send_upstream(incoming: Incoming, upstream: str, path: str, body: bytes | None = None, *,
                        websocket: bool = False) -> Outgoing:
    """Signed forward through the breaker, its answer whole (for the cache and WebSockets)."""
    breaker = _admit(incoming, upstream)
    body = incoming.body if body is None else body
    url, headers = _forward(incoming, upstream, path, websocket)
    request = Request(url, method=incoming.method, headers=[(k.decode("latin-1"), v.decode("latin-1"))
                                                            for k, v in headers], body=body)
    timeouts = incoming.edge.timeouts
    try:
        with timeouts.watch():
            reply = await getattr(env, UPSTREAMS[upstream]).fetch(request, sign=_signer(incoming, path, body))
    except TimeoutError:
        raise _timed_out(breaker, upstream, timeouts.timeout_s) from None
    out = CIMultiDict((k, v) for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP)
    _judge(breaker, upstream, reply.status, out.get("content-type", ""), "retry-after" in out,
           UNREACHABLE_HEADER in reply.headers)
    return Outgoing(reply.status, out, reply.body, reply.web_socket)


class _Relay:
    """The service's answer on its way to the client: hop-by-hop headers out, ours (rate limits,
    CORS) in; the breaker hears the status. A refused answer (a 5xx not in our error shape) is
    held back whole, for the caller to answer 502 instead. Headers stay bytes all the way."""

    def __init__(self, incoming: Incoming, breaker: CircuitBreaker, upstream: str, quota: Quota | None,
                 send: Any) -> None:
        self.incoming, self.breaker, self.upstream, self.send = incoming, breaker, upstream, send
        self.extra = quota.raw_headers() if quota is not None else []
        self.replaced = _HOP_BY_HOP_RELAYED if quota is None else _REPLACED_BY_QUOTA  # ours win
        self.status: int | None = None
        self.finished = False
        self.refused: ApiError | None = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            raw = message.get("headers", ())
            headers = [(k, v) for k, v in raw if k.lower() not in self.replaced]
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            try:
                _judge(self.breaker, self.upstream, message["status"], content_type.decode("latin-1"),
                       message["status"] == 503 and any(k.lower() == b"retry-after" for k, _ in headers),
                       any(k.lower() == UNREACHABLE_BYTES for k, _ in raw))
            except ApiError as exc:
                self.refused = exc
                return
            self.status = message["status"]
            await self.send({"type": "http.response.start", "status": self.status,
                             "headers": with_cors(self.incoming, headers + self.extra)})
        elif message["type"] == "http.response.body" and self.status is not None and not self.finished:
            self.finished = not message.get("more_body", False)
            await self.send(message if self.incoming.method != "HEAD" else {**message, "body": b""})


def with_cors(incoming: Incoming, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's (bytes) headers with CORS for the caller's origin, when ALLOWED_ORIGINS is set
    (a service's own Access-Control-Allow-Origin stands) and `Vary: Origin`."""
    spec = incoming.edge.allowed_origins
    if not spec:
        return headers
    out: list[tuple[bytes, bytes]] = []
    vary: list[str] = []
    own_cors = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"vary":
            vary.append(value.decode("latin-1"))
            continue
        own_cors = own_cors or lower == b"access-control-allow-origin"
        out.append((name, value))
    origin = incoming.headers.get("origin")
    if origin and not own_cors:
        allowed = cors_headers(origin, spec)
        if allowed is not None:
            out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in allowed.items()]
    out.append((b"Vary", vary_with(", ".join(vary), "Origin").encode("latin-1") if vary else b"Origin"))
    return out


async def relay_upstream(incoming: Incoming, upstream: str, path: str, quota: Quota | None, send: Any) -> int:
    """Signed forward through the breaker, its answer relayed to the client as it comes (with
    the `quota`'s headers); the status sent."""
    breaker = _admit(incoming, upstream)
    url, headers = _forward(incoming, upstream, path)
    credentials = _signer(incoming, path, incoming.body)  # only a forward that leaves this process is signed
    relay = _Relay(incoming, breaker, upstream, quota, send)
    timeouts = incoming.edge.timeouts
    try:
        with timeouts.watch():
            await getattr(env, UPSTREAMS[upstream]).forward(incoming.method, url, headers, incoming.body, relay,
                                                            credentials=credentials)
    except TimeoutError:
        if relay.status is None:
            raise _timed_out(breaker, upstream, timeouts.timeout_s) from None
        if not relay.finished:  # a whole answer and a slow clean-up after it is no failure
            breaker.failed()
    if relay.refused is not None:
        raise relay.refused
    if relay.status is None:  # the service ended without answering
        breaker.failed()
        raise ApiError(502, "bad_gateway", f"The {upstream} service failed")
    if not relay.finished:  # cut short (timed out mid-body): end what the client has
        await send({"type": "http.response.body", "body": b""})
    return relay.status


async def cacheable_forward(incoming: Incoming, upstream: str, path: str) -> edge_cache.Stored:
    reply = await send_upstream(incoming, upstream, path, b"")
    rules = reply.headers.get("cache-control", "")
    cacheable = reply.status == 200 and "private" not in rules and "no-store" not in rules
    headers = [(k, v) for k, v in reply.headers.items() if k.lower() not in _DROP_CACHED]
    return edge_cache.Stored(reply.status, headers, reply.body, edge_cache.make_etag(reply.body), cacheable)


def from_cache(incoming: Incoming, stored: edge_cache.Stored, outcome: str) -> Outgoing:
    """Shape a cached (or shared) upstream answer: validators, freshness, 304 when it matches."""
    if not stored.cacheable:
        return Outgoing(stored.status, CIMultiDict(stored.headers), stored.body)
    cache = incoming.edge.cache
    extra = {"ETag": stored.etag, "X-Cache": outcome, "Age": str(cache.age(stored)),
             "Cache-Control": f"public, max-age={cache.max_age_s:g}, stale-while-revalidate={cache.stale_s:g}"}
    if edge_cache.etag_matches(incoming.headers.get("if-none-match"), stored.etag):
        reply = Outgoing(304, CIMultiDict(extra), b"")
    else:
        reply = Outgoing(stored.status, CIMultiDict([*stored.headers, *extra.items()]), stored.body)
    add_vary(reply.headers, "Authorization")
    return reply
