"""The gateway's pieces on their own: breaker transitions, cache rules, limit parsing, client keys,
request signatures and trace contexts."""
from __future__ import annotations

import asyncio

import pytest

from durable.observe.tracing import TraceContext
from durable.signing import SignatureError, sign, verify
from gateway.breakers import CircuitBreaker
from gateway.cache import (
    ResponseCache,
    Stored,
    cache_key,
    etag_matches,
    is_cacheable_request,
    make_etag,
)
from gateway.cors import cors_headers
from gateway.limits import client_key, parse_limits, route_class
from web.tokens import issue_token


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_the_window_then_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, window_s=10, cooldown_s=5, clock=clock)
    for _ in range(2):
        assert breaker.admit() is None
        breaker.failed()
    clock.now += 11  # the old failures left the window
    breaker.failed()
    breaker.failed()
    assert breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "open" and breaker.admit() == pytest.approx(5)
    clock.now += 5
    assert breaker.admit() is None and breaker.state == "half_open"
    assert breaker.admit() == 1.0  # one probe at a time
    breaker.failed()
    assert breaker.state == "open"
    clock.now += 5
    assert breaker.admit() is None
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.snapshot() == {"state": "closed", "recent_failures": 0}


def test_a_probe_that_never_reports_does_not_block_forever() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.admit() is None
    clock.now += 5
    assert breaker.admit() is None


def test_cache_rules() -> None:
    assert cache_key("/products", "b=2&a=1") == cache_key("/products/", "a=1&b=2") == "/products?a=1&b=2"
    assert is_cacheable_request("GET", "/products/abc", {})
    assert not is_cacheable_request("GET", "/products/abc", {"authorization": "Bearer x"})
    assert not is_cacheable_request("GET", "/products/abc", {"cache-control": "no-cache"})
    assert not is_cacheable_request("POST", "/products", {})
    assert not is_cacheable_request("GET", "/orders", {})
    assert not is_cacheable_request("GET", "/products/a/b", {})
    tag = make_etag(b"x")
    assert etag_matches(tag, tag) and etag_matches(f'"other", W/{tag}', tag) and etag_matches("*", tag)
    assert not etag_matches('"other"', tag) and not etag_matches(None, tag)


async def test_cache_freshness_staleness_purge_and_bound() -> None:
    clock = Clock()
    cache = ResponseCache(max_bytes=2000, max_age_s=10, stale_s=20, clock=clock)
    loads = []

    async def load(body: bytes = b"v1") -> Stored:
        loads.append(body)
        return Stored(200, [], body, make_etag(body))

    assert (await cache.fetch("/products", load))[1] == "MISS"
    assert (await cache.fetch("/products", load))[1] == "HIT"
    clock.now += 15
    entry, outcome = await cache.fetch("/products", lambda: load(b"v2"))
    assert outcome == "STALE" and entry.body == b"v1"
    await asyncio.sleep(0)  # the background refresh runs
    assert (await cache.fetch("/products", load))[0].body == b"v2"
    assert cache.purge("/products") == 1 and (await cache.fetch("/products", load))[1] == "MISS"
    for i in range(40):  # 40 × ~600 bytes into 2000: the oldest go
        await cache.fetch(f"/products/{i}", lambda: load(b"x" * 500))
    assert cache.snapshot()["bytes"] <= 2000 and cache.snapshot()["entries"] == 3


async def test_concurrent_misses_share_one_load_and_a_purge_wins_over_an_older_fill() -> None:
    cache = ResponseCache()
    release = asyncio.Event()
    calls = 0

    async def slow() -> Stored:
        nonlocal calls
        calls += 1
        await release.wait()
        return Stored(200, [], b"old price", make_etag(b"old price"))

    waiting = [asyncio.create_task(cache.fetch("/products/1", slow)) for _ in range(10)]
    await asyncio.sleep(0.01)
    cache.purge("/products")  # a PATCH landed while the read was in flight
    release.set()
    results = await asyncio.gather(*waiting)
    assert calls == 1 and {r[0].body for r in results} == {b"old price"}
    assert cache.snapshot()["entries"] == 0  # never stored after the purge


def test_rate_limit_parsing_and_client_keys() -> None:
    limits = parse_limits("base.read=100/60, payments.write=5/1.5, payments.webhook=1000/60")
    assert (limits["base.read"].limit, limits["payments.write"].period_s) == (100, 1.5)
    assert [route_class("GET", "/products"), route_class("POST", "/orders"), route_class("POST", "/payments/initiate"),
            route_class("POST", "/payments/webhooks/stripe"), route_class("POST", "/payments/mpesa/callback")] == [
        "read", "write", "write", "webhook", "webhook"]
    for bad in ("base=1/1", "base.read=0/60", "base.read=ten/60", "base.read=1/0"):
        with pytest.raises(ValueError):
            parse_limits(bad)
    token = issue_token("k" * 40, email="a@b.c", user_id="u1", role="user")
    assert client_key(f"Bearer {token}", "10.0.0.1", None) == "ip:10.0.0.1"  # unverifiable: by address
    assert client_key(f"Bearer {token}", "10.0.0.1", "k" * 40) == "user:u1"
    forged = issue_token("other" * 10, email="a@b.c", user_id="u1", role="user")
    assert client_key(f"Bearer {forged}", "10.0.0.1", "k" * 40) == "ip:10.0.0.1"  # verified when we can
    assert client_key("Bearer not-a-jwt", "10.0.0.1", None) == "ip:10.0.0.1"
    assert client_key(None, "10.0.0.1", None) == "ip:10.0.0.1"


def test_cors_never_star_with_credentials() -> None:
    spec = "https://shop.example, http://localhost:3000"
    assert cors_headers("https://shop.example", spec)["Access-Control-Allow-Credentials"] == "true"
    assert cors_headers("https://evil.example", spec) is None
    star = cors_headers("https://any.example", "*")
    assert star["Access-Control-Allow-Origin"] == "*" and "Access-Control-Allow-Credentials" not in star


def test_signatures() -> None:
    header = sign("key", "POST", "/orders?x=1", b"{}", timestamp=1000)
    verify("key", header, "POST", "/orders?x=1", b"{}", now=1030)
    cases = [("key", None, "POST", "/orders?x=1", b"{}", 1030, "unsigned"),
             ("key", "garbage", "POST", "/orders?x=1", b"{}", 1030, "malformed"),
             ("key", header, "POST", "/orders?x=1", b"{}", 1061, "stale"),
             ("other", header, "POST", "/orders?x=1", b"{}", 1030, "does not match"),
             ("key", header, "POST", "/orders?x=2", b"{}", 1030, "does not match"),
             ("key", header, "POST", "/orders?x=1", b'{"a":1}', 1030, "does not match"),
             ("key", header, "DELETE", "/orders?x=1", b"{}", 1030, "does not match")]
    for key, given, method, target, body, now, reason in cases:
        with pytest.raises(SignatureError, match=reason):
            verify(key, given, method, target, body, now=now)


def test_trace_context_continues_or_starts() -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    ctx = TraceContext.from_headers({"traceparent": parent, "X-Request-Id": "req-1"})
    assert ctx.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and ctx.span_id != "00f067aa0ba902b7"
    assert ctx.request_id == "req-1" and ctx.outgoing()["traceparent"].startswith("00-4bf92f3577b34da6")
    for bad in ("garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-4bf92f35-00f067aa0ba902b7-01"):
        fresh = TraceContext.from_headers([("traceparent", bad), ("x-request-id", "bad id with spaces")])
        assert len(fresh.trace_id) == 32 and fresh.trace_id != "0" * 32 and " " not in fresh.request_id
