"""The payments worker as its own process: stop it and the gateway's circuit opens (immediate
503s, base keeps serving, /health degraded); start it again and one probe closes the circuit.
Every hop is signed and verified (REQUIRE_SERVICE_AUTH on, bindings over HTTP)."""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bson import ObjectId

from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import BASE_TOML, GATEWAY_TOML, IMAGES_TOML, JWT_KEY, PAYMENTS_TOML, SERVICE_AUTH_KEY

pytestmark = pytest.mark.slow


async def get(http: aiohttp.ClientSession, url: str, token: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_breaker_opens_when_payments_dies_and_closes_when_it_returns(dev_process, tmp_path: Path,
                                                                          mongo_uri: str) -> None:
    db_name = f"t_{uuid.uuid4().hex[:16]}"
    env = {"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY, "SERVICE_AUTH_KEY": SERVICE_AUTH_KEY}
    auth_on = ("--var", "REQUIRE_SERVICE_AUTH:true")
    edge = dev_process("-c", str(GATEWAY_TOML), "-c", str(BASE_TOML), "-c", str(IMAGES_TOML), "--port", "0", "--persist-to",
                       str(tmp_path / "edge"), "--var", f"MONGODB_DB:{db_name}", "--var", "BREAKER_FAILURES:2",
                       "--var", "BREAKER_COOLDOWN_S:1", *auth_on, extra_env=env)

    def start_payments():
        return dev_process("-c", str(PAYMENTS_TOML), "--port", "0", "--persist-to", str(tmp_path / "pay"),
                           "--var", f"MONGODB_DB:{db_name}_pay", *auth_on, extra_env=env)

    payments = start_payments()
    gateway = edge.ready_url.rstrip("/")
    user = mint_token(MongoClient(mongo_uri)[db_name], JWT_KEY, "user", str(ObjectId()), "u@x")
    async with aiohttp.ClientSession() as http:
        assert (await get(http, f"{gateway}/api/payments/history", user))[0] == 200  # signed, over HTTP
        assert (await get(http, f"{gateway}/health"))[0] == 200

        payments.kill9()
        first = [(await get(http, f"{gateway}/api/payments/history", user))[0] for _ in range(2)]
        assert all(status in (502, 503) for status in first)  # connection refused: failures counted
        status, body, headers = await get(http, f"{gateway}/api/payments/history", user)
        assert status == 503 and body["error"]["code"] == "upstream_unavailable" and headers["Retry-After"]
        assert (await get(http, f"{gateway}/api/products"))[0] == 200  # base keeps serving
        status, health, _ = await get(http, f"{gateway}/health")
        assert status == 503 and health["status"] == "degraded"
        assert health["circuits"]["payments"]["state"] == "open" and health["services"]["payments"]["status"] == "down"

        start_payments()
        deadline = time.monotonic() + 30
        while (await get(http, f"{gateway}/api/payments/history", user))[0] != 200:
            assert time.monotonic() < deadline, "the circuit never closed"
            await asyncio.sleep(0.2)
        status, health, _ = await get(http, f"{gateway}/health")
        assert status == 200 and health["circuits"]["payments"]["state"] == "closed"
