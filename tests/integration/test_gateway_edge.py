"""The gateway as an edge, over real sockets with all three workers: tracing across services,
signatures, exact rate limits, the cache (hit, miss, 304, purge), health, CORS."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest
from bson import ObjectId

from durable import Request
from durable.asgi import BINDING_SCOPE_KEY, asgi_fetch
from durable.observe.tail import TailFilters
from durable.rpc.wire import INTERNAL_AUDIENCE_HEADER, SIGN_AGAIN_HEADER
from durable.signing import sign
from tests.conftest import SERVICE_AUTH_KEY, WEBSOCKET_UPGRADE
from tests.shop_flows import setup_order


@pytest.fixture
def edge_shop(custom_shop: Any) -> Any:
    """Factory: the full shop with gateway var overrides (one per test)."""
    return lambda **gateway_vars: custom_shop(gateway_vars=gateway_vars)


async def next_event(session: Any, request_id: str) -> dict[str, Any]:
    """The worker's event for this request: it is published as the response finishes, so wait."""
    while True:
        event = await asyncio.wait_for(session.queue.get(), 5)
        if event.get("requestId") == request_id:
            return event


def drain(session: Any) -> list[dict[str, Any]]:
    events = []
    while not session.queue.empty():
        events.append(session.queue.get_nowait())
    return events


def reads(session: Any) -> list[dict[str, Any]]:
    """The GET requests among the events so far. (A relayed write's answer reaches the client
    before its hop's event is published, so a write's event may still be on its way.)"""
    return [e for e in drain(session) if e["event"].get("request", {}).get("method") == "GET"]


async def test_one_request_id_and_trace_across_gateway_payments_and_base(edge_shop) -> None:
    shop = await edge_shop()
    user, order_id, _ = await setup_order(shop)
    hub = shop.runtime.hub
    tails = {name: hub.create(name, TailFilters()) for name in ("rest-shop-gateway", "rest-shop-payments",
                                                                "rest-shop-api")}
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    status, body, headers = await shop.call(
        "POST", "/api/payments/initiate", {"orderId": order_id, "paymentMethod": "stripe",
                                           "paymentData": {"paymentMethodId": "pm_card_visa"}},
        token=user, headers={"Idempotency-Key": "trace-1", "X-Request-Id": "req-trace-1",
                             "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert status == 201 and headers["X-Request-Id"] == "req-trace-1"
    edge_event = await next_event(tails["rest-shop-gateway"], "req-trace-1")  # the last one published
    seen = {name: [e for e in drain(tail) if e.get("requestId") == "req-trace-1"] for name, tail in tails.items()}
    seen["rest-shop-gateway"].append(edge_event)
    assert all(seen.values()), {k: len(v) for k, v in seen.items()}
    for events in seen.values():
        assert all(e["traceparent"].split("-")[1] == trace_id for e in events)
    rpc = [e["event"]["rpc"] for e in seen["rest-shop-api"] if "rpc" in e["event"]]
    assert {"class": "OrderLock", "method": "begin_payment"} in rpc  # payments → base's OrderLock
    assert {"class": "UserSessions", "method": "check"} in rpc  # payments → base's object, for the token
    own = [e["event"]["rpc"] for e in seen["rest-shop-payments"] if "rpc" in e["event"]]
    assert {"class": "PaymentIdempotency", "method": "begin"} in own  # a worker's calls to its own objects too
    spans = {e["traceparent"].split("-")[2] for events in seen.values() for e in events}
    assert len(spans) >= 3  # each hop its own span of one trace

    status, _, _ = await shop.call("POST", "/api/orders", {"productId": (await shop.product())["_id"]}, token=user,
                                   headers={"X-Request-Id": "req-order-1"})
    assert status == 201
    in_worker = []
    while not in_worker or "request" not in in_worker[-1]:  # its object calls end before the request does
        in_worker.append((await next_event(tails["rest-shop-api"], "req-order-1"))["event"])
    assert {"rpc": {"class": "OrderLock", "method": "create"}} in in_worker  # base's handler → base's own object

    status, _, headers = await shop.call("GET", "/api/products")
    generated = headers["X-Request-Id"]
    assert status == 200 and len(generated) == 32
    base_event = await next_event(tails["rest-shop-api"], generated)
    assert TailFilters.from_api({"filters": [{"query": generated}]}).matches(base_event)  # wrangler tail --search <id>


async def test_services_accept_only_what_the_gateway_signed(edge_shop) -> None:
    shop = await edge_shop()
    base = shop.runtime.workers["rest-shop-api"]
    body = b'{"email": "direct@example.com", "password": "password123"}'

    async def direct(headers: dict[str, str], payload: bytes = body, path: str = "/user/signup") -> int:
        reply = await asgi_fetch(base, Request(f"http://base{path}", method="POST", body=payload,
                                               headers={"content-type": "application/json", **headers}))
        return reply.status

    now = int(time.time())
    assert await direct({}) == 401
    assert await direct({"X-Gateway-Signature": sign("wrong-key", "POST", "/user/signup", body)}) == 401
    assert await direct({"X-Gateway-Signature": sign(SERVICE_AUTH_KEY, "POST", "/user/signup", body,
                                                     timestamp=now - 61)}) == 401
    tampered = sign(SERVICE_AUTH_KEY, "POST", "/user/signup", body)
    assert await direct({"X-Gateway-Signature": tampered}, body.replace(b"direct", b"evil")) == 401
    vouched = [("authorization", ""), ("cf-connecting-ip", "198.51.100.20"), ("content-type", "application/json"),
               ("idempotency-key", ""), (INTERNAL_AUDIENCE_HEADER, "rest-shop-api")]
    uncovered = sign(SERVICE_AUTH_KEY, "POST", "/user/signup", body)  # leaves out the caller's token and address
    assert await direct({"X-Gateway-Signature": uncovered, "CF-Connecting-IP": "198.51.100.20"}) == 401
    good = sign(SERVICE_AUTH_KEY, "POST", "/user/signup", body, headers=vouched)
    here = {INTERNAL_AUDIENCE_HEADER: "rest-shop-api"}  # the process (in a cluster: the node) it was signed for
    swapped_ip = {"X-Gateway-Signature": good, "CF-Connecting-IP": "198.51.100.21", **here}
    assert await direct(swapped_ip) == 401  # another client address than the one signed
    added_token = {"X-Gateway-Signature": good, "CF-Connecting-IP": "198.51.100.20", "Authorization": "Bearer x", **here}
    assert await direct(added_token) == 401  # credentials added after signing
    elsewhere = [(k, "node-b" if k == INTERNAL_AUDIENCE_HEADER else v) for k, v in vouched]
    for_another_node = sign(SERVICE_AUTH_KEY, "POST", "/user/signup", body, headers=elsewhere)
    assert await direct({"X-Gateway-Signature": for_another_node, "CF-Connecting-IP": "198.51.100.20",
                         INTERNAL_AUDIENCE_HEADER: "node-b"}) == 401  # captured on its way to another node
    assert shop.db()["users"].count_documents({}) == 0  # refused requests did nothing
    assert await direct({"X-Gateway-Signature": good, "CF-Connecting-IP": "198.51.100.20", **here}) == 201
    replay = await direct({"X-Gateway-Signature": good, "CF-Connecting-IP": "198.51.100.20", **here})
    assert replay == 401  # the same signature twice within its window: a replay
    reply = await asgi_fetch(base, Request("http://base/health"))
    assert reply.status == 200  # probes need no signature
    status, _, _ = await shop.call("POST", "/api/user/signup", {"email": "edge@example.com",
                                                               "password": "password123"},
                                   headers={"X-Gateway-Signature": "t=1,v1=forged-by-client"})
    assert status == 201  # a client's own signature header is dropped; the gateway signs


async def test_a_full_replay_guard_is_a_retryable_503_and_an_old_signature_is_refused(edge_shop) -> None:
    """Replay protection lives in the process's memory: a signature stamped before the worker
    started is refused (a capture from before a restart), and when every remembered signature is
    still live a new one is refused for now (503, Retry-After) rather than a live one forgotten."""
    shop = await edge_shop()
    base = shop.runtime.workers["rest-shop-api"]
    body = b'{"email": "full@example.com", "password": "password123"}'
    vouched = [("authorization", ""), ("cf-connecting-ip", "198.51.100.20"), ("content-type", "application/json"),
               ("idempotency-key", ""), (INTERNAL_AUDIENCE_HEADER, "rest-shop-api")]

    async def direct(stamp: int | None = None) -> Any:
        signature = sign(SERVICE_AUTH_KEY, "POST", "/user/signup", body, headers=vouched, timestamp=stamp)
        return await asgi_fetch(base, Request("http://base/user/signup", method="POST", body=body, headers={
            "content-type": "application/json", "X-Gateway-Signature": signature,
            "CF-Connecting-IP": "198.51.100.20", INTERNAL_AUDIENCE_HEADER: "rest-shop-api"}))
    nonces = base.env.isolate_state("gateway_nonces", lambda: None)
    before_start = await direct(nonces.not_before - 5)  # within the window, but from before the start
    assert before_start.status == 401 and before_start.headers.get(SIGN_AGAIN_HEADER) == "1"  # ran nothing
    nonces.max_entries = len(nonces._seen)
    full = await direct()
    assert full.status == 503 and full.headers.get("retry-after") == "1"
    assert shop.db()["users"].count_documents({}) == 0
    nonces.max_entries = 200_000
    assert (await direct()).status == 201


async def test_a_forward_within_the_process_needs_no_signature_and_no_client_can_claim_one(edge_shop) -> None:
    """A service binding in this process cannot be reached from outside (as on Cloudflare), so the
    gateway signs only what leaves the process; the mark is in the ASGI scope, not a header."""
    shop = await edge_shop()
    tail = shop.runtime.hub.create("rest-shop-api", TailFilters())
    status, _, headers = await shop.call("POST", "/api/user/signup", {"email": "bound@example.com",
                                                                     "password": "password123"})
    assert status == 201
    event = (await next_event(tail, headers["X-Request-Id"]))["event"]
    while "request" not in event:  # its object calls end before the request does
        event = (await next_event(tail, headers["X-Request-Id"]))["event"]
    seen = event["request"]["headers"]
    assert "x-gateway-signature" not in seen and seen["cf-connecting-ip"] == "127.0.0.1"
    base = shop.runtime.workers["rest-shop-api"]
    claimed = await asgi_fetch(base, Request("http://base/user/signup", method="POST", headers={
        "content-type": "application/json", BINDING_SCOPE_KEY: "True", "CF-Connecting-IP": "198.51.100.30"},
        body=b'{"email": "claimed@example.com", "password": "password123"}'))
    assert claimed.status == 401  # a header of that name is only a header
    assert shop.db()["users"].count_documents({"email": "claimed@example.com"}) == 0


async def test_exactly_the_limit_passes_under_1000_concurrent_requests(edge_shop) -> None:
    shop = await edge_shop(RATE_LIMITS="base.read=100/3600, base.write=5/3600")
    gateway_tail = shop.runtime.hub.create("rest-shop-gateway", TailFilters())
    replies = await asyncio.gather(*(shop.call("GET", "/api/products?limit=1") for _ in range(1000)))
    statuses = Counter(status for status, _, _ in replies)
    assert statuses == {200: 100, 429: 900}
    takes = [e for e in drain(gateway_tail) if e["event"].get("rpc") == {"class": "RateLimiter", "method": "take"}]
    assert len(takes) < 100  # allowances for the 100, and the refusals remembered: not 1,000 object calls
    limited = next(r for r in replies if r[0] == 429)
    assert limited[1]["error"]["code"] == "rate_limited" and int(limited[2]["Retry-After"]) >= 1
    assert limited[2]["RateLimit-Limit"] == "100" and limited[2]["RateLimit-Remaining"] == "0"
    passed = [r for r in replies if r[0] == 200]
    assert sorted(int(r[2]["RateLimit-Remaining"]) for r in passed) == list(range(100))
    user = shop.token(user_id=str(ObjectId()))
    assert (await shop.call("GET", "/api/products?limit=1", token=user))[0] == 200  # a user has their own bucket
    writes = [await shop.call("POST", "/api/user/login", {"email": "x@example.com", "password": "password123"})
              for _ in range(6)]
    assert [s for s, _, _ in writes] == [401] * 5 + [429]  # writes: their own, smaller budget


async def test_a_busy_client_spends_from_an_allowance_and_its_remaining_still_counts_down_by_one(edge_shop) -> None:
    shop = await edge_shop(RATE_LIMITS="base.read=1000/3600")
    gateway_tail = shop.runtime.hub.create("rest-shop-gateway", TailFilters())
    remaining = []
    for _ in range(60):
        status, _, headers = await shop.call("GET", "/api/products?limit=1")
        assert status == 200
        remaining.append(int(headers["RateLimit-Remaining"]))
    assert remaining == list(range(999, 939, -1))  # what the bucket alone would say
    takes = [e for e in drain(gateway_tail) if e["event"].get("rpc") == {"class": "RateLimiter", "method": "take"}]
    assert 1 <= len(takes) < 15  # allowances of 1, 2, 4, 8, ... tokens: not one object call per request


async def test_public_catalogue_reads_are_cached_validated_and_purged_by_writes(edge_shop) -> None:
    shop = await edge_shop()
    product = await shop.product(name="Lamp", price=20)
    path = f"/api/products/{product['_id']}"
    base_tail = shop.runtime.hub.create("rest-shop-api", TailFilters())
    status, first, headers = await shop.call("GET", path)
    assert status == 200 and headers["X-Cache"] == "MISS" and "public, max-age=30" in headers["Cache-Control"]
    etag = headers["ETag"]
    status, second, headers = await shop.call("GET", path)
    assert (status, second, headers["X-Cache"], headers["ETag"]) == (200, first, "HIT", etag)
    assert "Authorization" in headers["Vary"]
    status, body, headers = await shop.call("GET", path, headers={"If-None-Match": etag})
    assert status == 304 and not body and headers["ETag"] == etag
    assert len(reads(base_tail)) == 1  # one upstream request for three reads

    admin = shop.token("admin")
    assert (await shop.call("GET", path, token=admin))[2].get("X-Cache") is None  # authenticated: never cached
    assert (await shop.call("PATCH", path, {"price": 25}, token=admin))[0] == 200
    status, fresh, headers = await shop.call("GET", path)
    assert headers["X-Cache"] == "MISS" and fresh["price"] == 25 and headers["ETag"] != etag  # no stale price
    assert (await shop.call("GET", path, headers={"If-None-Match": etag}))[0] == 200

    drain(base_tail)
    replies = await asyncio.gather(*(shop.call("GET", "/api/products?limit=3&sort=newest") for _ in range(50)))
    assert {r[0] for r in replies} == {200} and len(reads(base_tail)) == 1  # concurrent misses share one fetch
    assert (await shop.call("GET", "/api/products?sort=newest&limit=3"))[2]["X-Cache"] == "HIT"  # same query


async def test_health_aggregates_services_and_circuits(edge_shop) -> None:
    shop = await edge_shop()
    status, body, _ = await shop.call("GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["service"] == "rest-shop-gateway"
    assert body["services"]["base"]["status"] == "ok" and body["services"]["base"]["database"]["status"] == "connected"
    assert body["services"]["payments"]["idempotency"]["records"] == 0
    assert body["services"]["images"]["status"] == "ok"
    assert body["circuits"] == {name: {"state": "closed", "recent_failures": 0} for name in ("base", "payments", "images")}
    assert all(isinstance(s["latency_ms"], float) for s in body["services"].values())


async def test_cors_preflight_and_responses(edge_shop) -> None:
    shop = await edge_shop(ALLOWED_ORIGINS="https://shop.example")
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{shop.url}/api/orders", headers={
                "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        async with http.options(f"{shop.url}/api/orders", headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    status, _, headers = await shop.call("GET", "/api/products", headers={"Origin": "https://shop.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-Request-Id" in headers["Access-Control-Expose-Headers"] and "Origin" in headers["Vary"]
    status, _, headers = await shop.call("GET", "/api/products", headers={"Origin": "https://evil.example"})
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    relayed = {"Origin": "https://shop.example", "Cache-Control": "no-cache"}  # not from the cache: relayed
    status, _, headers = await shop.call("GET", "/api/products", headers=relayed)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-Cache" not in headers and headers.getall("Vary") == ["Origin"]


async def test_a_failing_upstream_opens_its_circuit_and_base_keeps_serving(edge_shop) -> None:
    shop = await edge_shop(BREAKER_FAILURES=3, BREAKER_COOLDOWN_S=0.5)
    payments = shop.runtime.workers["rest-shop-payments"]
    healthy_app = payments.app

    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<h1>boom</h1>"})

    payments.app = broken
    try:
        statuses = [(await shop.call("GET", "/api/payments/history"))[0] for _ in range(5)]
        assert statuses == [502, 502, 502, 503, 503]  # an HTML 500 becomes our 502; then the circuit is open
        status, body, headers = await shop.call("GET", "/api/payments/history")
        assert body["error"]["code"] == "upstream_unavailable" and int(headers["Retry-After"]) >= 1
        assert (await shop.call("GET", "/api/products"))[0] == 200  # base is not affected
        health = (await shop.call("GET", "/health"))[1]
        assert health["circuits"]["payments"]["state"] == "open" and health["status"] == "degraded"
    finally:
        payments.app = healthy_app
    await asyncio.sleep(0.6)  # the cool-down passes: one probe goes through and closes the circuit
    assert (await shop.call("GET", "/api/payments/history", token=shop.token()))[0] == 200
    assert (await shop.call("GET", "/health"))[1]["circuits"]["payments"]["state"] == "closed"


async def test_a_silent_upstream_times_out_and_a_slow_clean_up_after_an_answer_does_not(edge_shop) -> None:
    shop = await edge_shop(UPSTREAM_TIMEOUT_S=0.3, BREAKER_FAILURES=2, HEALTH_PROBE_TIMEOUT_S=0.2)
    payments = shop.runtime.workers["rest-shop-payments"]
    healthy_app = payments.app
    release = asyncio.Event()

    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await release.wait()

    async def answers_then_lingers(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"),
                                                                              (b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
        await release.wait()  # e.g. a slow teardown: the client has its whole answer already

    try:
        payments.app = answers_then_lingers
        for _ in range(3):
            status, body, _ = await shop.call("GET", "/api/payments/history")
            assert (status, body) == (200, {"ok": True})
        assert (await shop.call("GET", "/health"))[1]["circuits"]["payments"]["recent_failures"] == 0
        payments.app = silent
        status, body, headers = await shop.call("GET", "/api/payments/history")
        assert status == 504 and body["error"]["code"] == "upstream_timeout" and headers["Retry-After"] == "1"
        assert (await shop.call("GET", "/health"))[1]["circuits"]["payments"]["recent_failures"] == 1
    finally:
        release.set()
        payments.app = healthy_app


async def test_every_method_path_query_and_body_passes_through_both_prefixes(edge_shop) -> None:
    shop = await edge_shop()
    tails = {"base": shop.runtime.hub.create("rest-shop-api", TailFilters()),
             "payments": shop.runtime.hub.create("rest-shop-payments", TailFilters())}
    cases = [("GET", "/api/products?b=2&a=%C3%A9", "base", "/products?b=2&a=%C3%A9"),
             ("PUT", "/orders/abc?x=1", "base", "/orders/abc?x=1"),
             ("PATCH", "/api/orders/abc", "base", "/orders/abc"),
             ("DELETE", "/api/user/abc", "base", "/user/abc"),
             ("HEAD", "/api/products", "base", "/products"),
             ("POST", "/api/payments/initiate?q=1", "payments", "/payments/initiate?q=1"),
             ("GET", "/payments/history", "payments", "/payments/history")]
    for method, path, upstream, seen_path in cases:
        request_id = f"route-{method}-{upstream}-{len(seen_path)}"
        async with shop.http.request(method, shop.url + path, data=b'{"k": 1}' if method != "GET" else None,
                                     headers={"X-Request-Id": request_id, "X-Custom": "kept",
                                              "Cache-Control": "no-cache"}) as resp:
            await resp.read()
            assert resp.headers["X-Request-Id"] == request_id and resp.status < 500
        event = await next_event(tails[upstream], request_id)
        request = event["event"]["request"]
        assert request["method"] == method and request["url"].endswith(seen_path), (method, request["url"])
        assert request["headers"]["x-custom"] == "kept" and "connection" not in request["headers"]
        assert request["headers"]["x-forwarded-proto"] == "http"


async def test_provider_callbacks_are_limited_per_source_by_default(edge_shop) -> None:
    """No webhook class in RATE_LIMITS still means a limit (DEFAULT_WEBHOOK_LIMIT), per source."""
    from gateway.limits import DEFAULT_WEBHOOK_LIMIT, limit_for
    assert limit_for("base.read=1/1", "payments", "webhook") == DEFAULT_WEBHOOK_LIMIT
    shop = await edge_shop(RATE_LIMITS="payments.webhook=3/3600")
    replies = [await shop.call("POST", "/api/payments/webhooks/paypal", {"id": f"WH-{i}"}) for i in range(5)]
    assert [status for status, _, _ in replies] == [400, 400, 400, 429, 429]  # forged: refused, then limited
    assert replies[-1][1]["error"]["code"] == "rate_limited"
    user = shop.token()
    assert (await shop.call("GET", "/api/payments/history", token=user))[0] == 200  # shoppers are unaffected


async def test_a_failure_in_the_gateway_itself_is_a_500_in_our_shape_and_logged_with_its_traceback(
        edge_shop, monkeypatch, caplog) -> None:
    """Fault injection: the proxy raises (as a bug of ours would). The client gets our error
    shape, never a trace; the operator's log gets the traceback, with nobody tailing."""
    import gateway.proxy

    async def broken(incoming: Any, send: Any) -> None:
        raise RuntimeError("the proxy broke: 1f3a")

    shop = await edge_shop()
    monkeypatch.setattr(gateway.proxy, "proxy", broken)
    with caplog.at_level(logging.ERROR, logger="durable.worker"):
        status, body, _ = await shop.call("GET", "/api/products/abc", headers={"Cache-Control": "no-cache"})
    assert status == 500 and body["error"]["code"] == "internal_error" and "1f3a" not in str(body)
    failed = [r for r in caplog.records if r.name == "durable.worker" and r.levelno == logging.ERROR]
    assert len(failed) == 1 and "GET /api/products/abc failed" in failed[0].getMessage()
    assert failed[0].exc_info is not None and "the proxy broke: 1f3a" in str(failed[0].exc_info[1])


async def test_a_rate_limit_bucket_cut_mid_call_is_a_retryable_503_not_a_500(edge_shop, monkeypatch) -> None:
    """The reproduction: the gateway's call to a RateLimiter on a host killed mid-call escaped as
    500 internal_error. (The bucket's node is made to vanish by its call raising what the runtime
    raises then.)"""
    from durable import ObjectUnavailable
    from gateway.allowances import TokenAllowances

    shop = await edge_shop(RATE_LIMITS="base.read=100/60, base.write=100/60, base.upgrade=100/60")

    async def cut(*args: Any, **kwargs: Any) -> Any:
        raise ObjectUnavailable("rest-shop-gateway (host of RateLimiter) failed mid-call: Connection reset by peer")
    monkeypatch.setattr(TokenAllowances, "take", cut)
    status, body, headers = await shop.call("GET", "/api/products")
    assert status == 503 and body["error"]["code"] == "object_unavailable" and headers["Retry-After"] == "1"
    async with shop.http.get(f"{shop.url}/api/orders/{'0' * 24}/live", headers=WEBSOCKET_UPGRADE) as resp:
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "object_unavailable"
