"""Spans exported over OTLP/HTTP by a real `wrangler dev` session to a receiver built from
opentelemetry-proto's own messages: one purchase through the gateway (an order, then its card
payment, under one client trace) is one trace whose spans run gateway → base → OrderLock →
MongoDB and gateway → payments → the provider."""
from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import JWT_KEY
from tests.polling import eventually

GATEWAY = "rest-shop-gateway"


class Receiver:
    """An OTLP/HTTP trace receiver: every span it was sent, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    async def traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes
                           if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({"service": service, "name": span.name, "trace": span.trace_id.hex(),
                                       "id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                                       "kind": span.kind, "error": span.status.code == 2,
                                       "attributes": {a.key: a.value for a in span.attributes}})
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    collector = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield collector, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


async def _buy_one(gateway: str, admin: dict[str, str], shopper: dict[str, str], traced: dict[str, str]) -> None:
    """A product made, then ordered and paid by card, the two calls carrying the shopper's trace."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{gateway}/api/products", json={"name": "Mug", "price": 12, "stock": 3},
                             headers=admin) as resp:
            assert resp.status == 201
            product = (await resp.json())["_id"]
        async with http.post(f"{gateway}/api/orders", json={"productId": product, "quantity": 1},
                             headers={**shopper, **traced}) as resp:
            assert resp.status == 201, await resp.text()
            order = (await resp.json())["createdOrder"]["_id"]
        async with http.post(f"{gateway}/api/payments/initiate",
                             json={"orderId": order, "paymentMethod": "card",
                                   "paymentData": {"paymentMethodId": "pm_card_visa"}},
                             headers={**shopper, **traced, "Idempotency-Key": uuid.uuid4().hex}) as resp:
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["payment"]["status"] == "succeeded"


async def test_one_purchase_is_one_trace_from_the_gateway_to_mongodb_and_the_provider(
        dev_process: Any, tmp_path: Path, mongo_uri: str, receiver: tuple[Receiver, str]) -> None:
    collector, endpoint = receiver
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    db = MongoClient(mongo_uri)[db_name]
    admin = {"Authorization": f"Bearer {mint_token(db, JWT_KEY, 'admin')}"}
    shopper = {"Authorization": f"Bearer {mint_token(db, JWT_KEY, 'user')}"}
    process = dev_process("--port", "0", "--persist-to", str(tmp_path / "state"), "--var", f"MONGODB_DB:{db_name}",
                          extra_env={"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                     "OTEL_BSP_SCHEDULE_DELAY": "100"})
    gateway = process.urls[GATEWAY]
    trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traced = {"traceparent": f"00-{trace_id}-{client_span}-01"}  # the shopper's app started the trace
    await _buy_one(gateway, admin, shopper, traced)

    def ours() -> list[dict[str, Any]]:
        return [s for s in collector.spans if s["trace"] == trace_id]

    def path_to_client(span: dict[str, Any]) -> list[dict[str, Any]]:
        """The chain of parents from `span` up to the shopper's span; [] if it is broken."""
        by_id = {s["id"]: s for s in ours()}
        chain = [span]
        while chain[-1]["parent"] != client_span:
            parent = by_id.get(chain[-1]["parent"])
            if parent is None:
                return []
            chain.append(parent)
        return chain

    def reaches(service: str, name_part: str, *through: str) -> bool:
        """Some span of `service` named like `name_part` whose ancestors include `through` services."""
        for span in ours():
            if span["service"] == service and name_part in span["name"]:
                chain = path_to_client(span)
                if chain and all(any(s["service"] == t for s in chain) for t in through):
                    return True
        return False

    async def complete() -> bool:
        await asyncio.sleep(0)
        return (reaches("rest-shop-api", "mongodb", GATEWAY) and reaches("rest-shop-api", "OrderLock", GATEWAY)
                and reaches("rest-shop-payments", "stripe", GATEWAY))
    assert await eventually(complete, 30), sorted((s["service"], s["name"]) for s in ours())

    spans = ours()
    roots = [s for s in spans if s["parent"] == client_span]
    assert {(s["service"], s["name"]) for s in roots} == {(GATEWAY, "POST /*"), (GATEWAY, "POST /payments/*")}
    assert all(path_to_client(s) for s in spans), "every span hangs off the shopper's, through its parents"
    assert {"rest-shop-api", "rest-shop-payments", GATEWAY} <= {s["service"] for s in spans}
    base = next(s for s in spans if s["service"] == "rest-shop-api" and s["name"] == "POST /orders")
    assert base["kind"] == 2 and base["attributes"]["http.response.status_code"].int_value == 201  # SERVER
    assert not [s for s in spans if s["error"]]
