"""`GET /orders/:id/live`: a WebSocket through the gateway that follows one order's status."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import Shop


async def order_for(shop: Shop, token: str) -> str:
    product = await shop.product(stock=5)
    status, body, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": 1}, token=token)
    assert status == 201, body
    return body["createdOrder"]["_id"]


def live_url(shop: Shop, order_id: str, query: str = "") -> str:
    return shop.url.replace("http://", "ws://") + f"/api/orders/{order_id}/live{query}"


async def next_update(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive_json(timeout=10)
    assert message["type"] == "order"
    return message


async def test_the_owner_follows_every_change_until_the_order_is_final(full_shop: Shop) -> None:
    shop = full_shop
    owner, admin = shop.token("user"), shop.token("admin")
    order_id = await order_for(shop, owner)
    async with shop.http.ws_connect(live_url(shop, order_id), headers={"Authorization": f"Bearer {owner}"}) as ws:
        first = await next_update(ws)
        assert first["order"]["_id"] == order_id and first["order"]["status"] == "pending" and first["version"] == 1
        await ws.send_str("ping")
        assert await ws.receive_str(timeout=10) == "pong"  # answered by the runtime, not the object

        host = shop.runtime.workers["rest-shop-api"].hosts["OrderLock"]
        for version, status in enumerate(["confirmed", "processing", "shipped", "delivered"], start=2):
            host.evict_idle(0)  # hibernation: the instance may go; the socket stays with the runtime
            code, body, _ = await shop.call("PATCH", f"/api/orders/{order_id}/status", {"status": status},
                                            token=admin)
            assert code == 200, body
            update = await next_update(ws)
            assert (update["version"], update["order"]["status"]) == (version, status)
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1000  # final: nothing more will come
    lock_id = shop.runtime.workers["rest-shop-api"].env.ORDER_LOCK.id_from_name(order_id)
    assert host.websockets(lock_id) == []  # the object closed it: the runtime holds it no longer


async def test_a_browser_token_in_the_query_and_an_admin_may_follow_too(full_shop: Shop) -> None:
    shop = full_shop
    owner = shop.token("user")
    order_id = await order_for(shop, owner)
    async with shop.http.ws_connect(live_url(shop, order_id, f"?access_token={owner}")) as ws:
        assert (await next_update(ws))["order"]["status"] == "pending"
        code, _, _ = await shop.call("POST", f"/api/orders/{order_id}/cancel", token=owner)
        assert code == 200
        assert (await next_update(ws))["order"]["status"] == "cancelled"
    async with shop.http.ws_connect(live_url(shop, order_id), headers={
            "Authorization": f"Bearer {shop.token('admin')}"}) as ws:
        assert (await next_update(ws))["order"]["status"] == "cancelled"  # and then closed: it is final
        assert (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.CLOSE


@pytest.mark.parametrize("who, query, status", [
    ("stranger", "", 404), ("nobody", "", 401), ("owner", "bad-id", 400)])
async def test_refusals_are_the_api_s_http_errors(full_shop: Shop, who: str, query: str, status: int) -> None:
    shop = full_shop
    owner = shop.token("user")
    order_id = await order_for(shop, owner)
    token = {"stranger": shop.token("user"), "owner": owner}.get(who)
    url = live_url(shop, query or order_id)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await shop.http.ws_connect(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    assert refused.value.status == status


async def test_without_the_upgrade_it_is_426_and_the_document_lists_the_websocket(full_shop: Shop) -> None:
    shop = full_shop
    owner = shop.token("user")
    order_id = await order_for(shop, owner)
    status, body, headers = await shop.call("GET", f"/api/orders/{order_id}/live", token=owner)
    assert status == 426 and body["error"]["code"] == "upgrade_required"
    status, document, _ = await shop.call("GET", "/api/openapi.json")
    assert "/orders/{order_id}/live" not in document["paths"]  # not an HTTP operation for generated clients
    socket = document["x-websockets"]["/orders/{order_id}/live"]
    assert "WebSocket" in socket["summary"] and "access_token" in socket["description"]
