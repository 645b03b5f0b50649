"""rest-shop-gateway: the edge. Routes to the base and payments workers through service bindings.

Per request: CORS preflight → rate limit (a RateLimiter object per service, route class and
client) → edge cache for public catalogue reads → circuit breaker → signed forward. It does no
user authentication of its own: each service validates tokens itself.
"""
from __future__ import annotations

import asyncio
import math
from typing import Any

from quart import Quart, Response, request

from durable import Request, env
from durable.signing import sign
from models.errors import ApiError
from models.health import Health
from models.web import client_ip, install_error_handlers

from . import cache as edge_cache
from .cors import add_vary, cors_headers
from .edge import edge
from .health import aggregate
from .limits import client_key, parse_limits, route_class
from .objects.rate_limiter import RateLimiter
from .routing import PAYMENTS, route

__all__ = ["app", "RateLimiter"]

app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 8 * 1024 * 1024
install_error_handlers(app)

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
               "content-length", "remote-addr"}
_NOT_FROM_CLIENTS = {"x-forwarded-for", "x-forwarded-proto", "x-gateway-signature", "x-durable-signature"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@app.get("/health")
async def health() -> Any:
    body, status = await aggregate(env, edge(env))
    return {**Health.now(env.SERVICE_NAME, env.ENVIRONMENT, body["status"]).model_dump(), **body}, status


@app.after_request
async def add_cors(response: Response) -> Response:
    allowed = cors_headers(request.headers.get("Origin"), str(env.get("ALLOWED_ORIGINS", "")))
    if allowed is not None:
        response.headers.update(allowed)
    if env.get("ALLOWED_ORIGINS"):
        add_vary(response.headers, "Origin")
    return response


@app.route("/<path:path>", methods=_METHODS)
@app.route("/", defaults={"path": ""}, methods=_METHODS)
async def forward(path: str) -> Response:
    if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
        return preflight()
    upstream, upstream_path = route(request.path)
    limits = await rate_limit(upstream)
    query = request.query_string.decode("latin-1")
    state = edge(env)
    if edge_cache.is_cacheable_request(request.method, upstream_path, request.headers):
        stored, outcome = await state.cache.fetch(edge_cache.cache_key(upstream_path, query),
                                                  lambda: cacheable_forward(upstream, upstream_path, query))
        response = from_cache(stored, outcome)
    else:
        reply = await send_upstream(upstream, upstream_path, query, await request.get_data())
        if edge_cache.is_catalogue_write(request.method, upstream_path) and reply.status < 400:
            state.cache.purge("/products")
        response = Response(reply.body, status=reply.status,
                            headers=[(k, v) for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP])
    response.headers.update(limits)
    return response


def preflight() -> Response:
    allowed = cors_headers(request.headers.get("Origin"), str(env.get("ALLOWED_ORIGINS", "")), preflight=True,
                           requested_headers=request.headers.get("Access-Control-Request-Headers"))
    if allowed is None:
        raise ApiError(403, "cors_forbidden", "This origin may not call the API")
    return Response(b"", status=204, headers=allowed)


async def rate_limit(upstream: str) -> dict[str, str]:
    """Spend one token from the caller's bucket for this service and route class, or 429."""
    limit = parse_limits(str(env.get("RATE_LIMITS", ""))).get(f"{upstream}.{route_class(request.method)}")
    if limit is None:
        return {}
    who = client_key(request.headers.get("Authorization"), client_ip(), env.get("JWT_KEY"))
    ns = env.RATE_LIMITER
    bucket = ns.get(ns.id_from_name(f"{upstream}:{route_class(request.method)}:{who}"))
    result = await bucket.take(limit.limit, limit.period_s)
    headers = {"RateLimit-Limit": str(result["limit"]), "RateLimit-Remaining": str(result["remaining"]),
               "RateLimit-Reset": str(result["reset"])}
    if not result["allowed"]:
        raise ApiError(429, "rate_limited", "Too many requests; slow down",
                       headers={**headers, "Retry-After": str(result["retry_after"])})
    return headers


async def send_upstream(upstream: str, path: str, query: str, body: bytes) -> Any:
    """Signed forward through the breaker; 503 at once while it is open, 504 on a timeout."""
    breaker = edge(env).breakers[upstream]
    wait = breaker.admit()
    if wait is not None:
        raise ApiError(503, "upstream_unavailable", f"The {upstream} service is unavailable; retry later",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    target = path + (f"?{query}" if query else "")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP | _NOT_FROM_CLIENTS]
    chain = [request.headers.get("x-forwarded-for", ""), request.remote_addr or ""]
    headers += [("x-forwarded-for", ", ".join(part for part in chain if part)),
                ("x-forwarded-proto", request.scheme),
                ("x-gateway-signature", sign(env.SERVICE_AUTH_KEY, request.method, target, body))]
    binding = env.PAYMENT_SERVICE if upstream == PAYMENTS else env.BASE_SERVICE
    outgoing = Request(f"http://{upstream}{target}", method=request.method, headers=headers, body=body)
    timeout_s = float(env.get("UPSTREAM_TIMEOUT_S", 30))
    try:
        reply = await asyncio.wait_for(binding.fetch(outgoing), timeout_s)
    except asyncio.TimeoutError:
        breaker.failed()
        raise ApiError(504, "upstream_timeout", f"The {upstream} service did not answer within {timeout_s:g} s",
                       headers={"Retry-After": "1"}) from None
    if reply.status < 500 or reply.status == 501:
        breaker.succeeded()
        return reply
    breaker.failed()
    if not reply.headers.get("content-type", "").startswith("application/json"):  # not our error shape
        raise ApiError(502, "bad_gateway", f"The {upstream} service failed")
    return reply


async def cacheable_forward(upstream: str, path: str, query: str) -> edge_cache.Stored:
    reply = await send_upstream(upstream, path, query, b"")
    headers = [(k, v) for k, v in reply.headers.items()
               if k.lower() not in _HOP_BY_HOP | {"x-request-id", "cache-control", "etag"}]
    upstream_rules = reply.headers.get("cache-control", "")
    cacheable = reply.status == 200 and "private" not in upstream_rules and "no-store" not in upstream_rules
    return edge_cache.Stored(reply.status, headers, reply.body, edge_cache.make_etag(reply.body), cacheable)


def from_cache(stored: edge_cache.Stored, outcome: str) -> Response:
    """Shape a cached (or shared) upstream answer: validators, freshness, 304 when it matches."""
    cache = edge(env).cache
    if not stored.cacheable:
        return Response(stored.body, status=stored.status, headers=stored.headers)
    rules = f"public, max-age={cache.max_age_s:g}, stale-while-revalidate={cache.stale_s:g}"
    extra = {"ETag": stored.etag, "Cache-Control": rules, "X-Cache": outcome, "Age": str(cache.age(stored))}
    if edge_cache.etag_matches(request.headers.get("If-None-Match"), stored.etag):
        response = Response(b"", status=304, headers=extra)
    else:
        response = Response(stored.body, status=stored.status, headers=[*stored.headers, *extra.items()])
    add_vary(response.headers, "Authorization")
    return response
