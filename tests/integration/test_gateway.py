"""The gateway forwards through its service bindings: paths, methods, bodies, statuses, headers."""
from __future__ import annotations

from durable import Request
from durable import config as wconfig
from durable.asgi import asgi_fetch
from durable.runtime import Runtime
from tests.conftest import ROOT


async def test_gateway_routes_and_passes_everything_through(tmp_path, mongo_uri, monkeypatch) -> None:
    monkeypatch.setenv("MONGODB_URI", mongo_uri)
    monkeypatch.setenv("JWT_KEY", "k" * 48)
    configs = [wconfig.load(p) for p in wconfig.discover(ROOT)]
    for config in configs:
        if "PUBLIC_BASE_URL" in config.vars:
            config.vars["PUBLIC_BASE_URL"] = "http://edge"
    rt = Runtime(configs, persist_to=tmp_path / "state")
    await rt.start()
    try:
        gateway = rt.workers["rest-shop-gateway"]
        from durable.observe.tail import TailFilters
        base_tail = rt.hub.create("rest-shop-api", TailFilters())
        pay_tail = rt.hub.create("rest-shop-payments", TailFilters())

        reply = await asgi_fetch(gateway, Request("http://edge/api/user/signup", method="POST",
                                                  json={"email": "bad", "password": "x"},
                                                  headers={"X-Forwarded-For": "198.51.100.7"}),
                                 client=("203.0.113.5", 5000))
        assert reply.status == 400 and (await reply.json())["error"]["code"] == "validation_error"
        event = base_tail.queue.get_nowait()
        assert event["event"]["request"]["url"].endswith("/user/signup")
        # no proxy is trusted by default: the client's own X-Forwarded-For is not passed on
        assert event["event"]["request"]["headers"]["x-forwarded-for"] == "203.0.113.5"
        assert event["event"]["request"]["headers"]["cf-connecting-ip"] == "203.0.113.5"
        assert "remote-addr" not in event["event"]["request"]["headers"]

        for path in ("/api/payments/no/such?x=1", "/payments/no/such?x=1"):
            reply = await asgi_fetch(gateway, Request(f"http://edge{path}", method="POST", body=b"{}"))
            assert reply.status == 404
            assert pay_tail.queue.get_nowait()["event"]["request"]["url"].endswith("/payments/no/such?x=1")
        assert base_tail.queue.empty()

        reply = await asgi_fetch(gateway, Request("http://edge/products?limit=500"))
        assert reply.status == 400 and base_tail.queue.get_nowait()["event"]["request"]["url"].endswith(
            "/products?limit=500")
    finally:
        await rt.close()
