"""`GET /orders/:id/live`: a WebSocket through the gateway that follows one order's status."""
from __future__ import annotations

from typing import Any

import logging

import aiohttp
import pytest
from bson import ObjectId

from durable.observe.tail import TailFilters
from tests.conftest import WEBSOCKET_UPGRADE, Shop
from tests.polling import eventually


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


async def refusal(shop: Shop, url: str, token: str) -> tuple[int, Any]:
    """A refused upgrade: its HTTP status and error envelope."""
    async with shop.http.get(url.replace("ws://", "http://"),
                             headers={"Authorization": f"Bearer {token}", **WEBSOCKET_UPGRADE}) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_sockets_are_capped_per_order_and_per_user_before_the_upgrade(custom_shop) -> None:
    """The reproduction: one user opened 1,310 sockets to one order in 5.5 s."""
    shop = await custom_shop(base_vars={"LIVE_SOCKETS_PER_ORDER": 3, "LIVE_SOCKETS_PER_USER": 4})
    owner = shop.token("user")
    first, second = await order_for(shop, owner), await order_for(shop, owner)
    opened = []
    try:
        for _ in range(3):
            ws = await shop.http.ws_connect(live_url(shop, first), headers={"Authorization": f"Bearer {owner}"})
            opened.append(ws)
            await next_update(ws)
        status, body = await refusal(shop, live_url(shop, first), owner)
        assert status == 429 and body["error"]["code"] == "too_many_sockets", body  # per order
        ws = await shop.http.ws_connect(live_url(shop, second), headers={"Authorization": f"Bearer {owner}"})
        opened.append(ws)
        await next_update(ws)
        status, body = await refusal(shop, live_url(shop, second), owner)
        assert status == 429 and body["error"]["code"] == "too_many_sockets", body  # per user
        await opened.pop().close()
        await opened.pop().close()  # places come back as sockets close
        async def reopened() -> bool:
            try:
                ws = await shop.http.ws_connect(live_url(shop, second), headers={"Authorization": f"Bearer {owner}"})
            except aiohttp.WSServerHandshakeError:
                return False
            opened.append(ws)
            return True
        assert await eventually(reopened)
    finally:
        for ws in opened:
            await ws.close()


@pytest.mark.parametrize("ending", ["logout everywhere", "role change", "deletion"])
async def test_a_session_that_ends_closes_its_sockets_and_a_stale_one_never_blocks_the_owner(
        custom_shop, ending: str) -> None:
    """The reproduction: sockets outlived logout-everywhere, a reset, a role change and deletion,
    and kept counting against the order's cap, so the owner's next session got 429."""
    shop = await custom_shop(base_vars={"LIVE_SOCKETS_PER_ORDER": 2, "LIVE_SESSION_CHECK_S": 0.1})
    user_id = str(ObjectId())
    stale_token, admin = shop.token("user", user_id), shop.token("admin")
    order_id = await order_for(shop, stale_token)
    opened = []
    try:
        for _ in range(2):
            opened.append(await shop.http.ws_connect(live_url(shop, order_id),
                                                     headers={"Authorization": f"Bearer {stale_token}"}))
            await next_update(opened[-1])
        fresh_token = shop.token("user", user_id)  # another session of the same account (a second device)
        opened.append(await shop.http.ws_connect(live_url(shop, order_id),
                                                 headers={"Authorization": f"Bearer {fresh_token}"}))
        await next_update(opened[-1])  # the cap counts per session: the stale ones take no place of its
        if ending == "logout everywhere":
            status, body, _ = await shop.call("POST", "/api/user/logout?all=true", token=fresh_token)
        elif ending == "role change":
            status, body, _ = await shop.call("PATCH", f"/api/user/{user_id}/role", {"role": "admin"}, token=admin)
        else:
            status, body, _ = await shop.call("DELETE", f"/api/user/{user_id}", token=admin)
        assert status == 200, body
        for ws in opened:
            closing = await ws.receive(timeout=10)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008, closing
    finally:
        for ws in opened:
            await ws.close()


async def test_upgrades_have_their_own_small_rate_class(custom_shop) -> None:
    shop = await custom_shop(gateway_vars={"RATE_LIMITS": "base.read=1000/60, base.write=1000/60, base.upgrade=2/60"})
    owner = shop.token("user")
    order_id = await order_for(shop, owner)
    statuses = [(await refusal(shop, live_url(shop, "0" * 24), owner))[0] for _ in range(3)]
    assert statuses == [404, 404, 429]  # refused upgrades spend the budget too
    assert (await shop.call("GET", f"/api/orders/{order_id}", token=owner))[0] == 200  # reads are apart


async def test_a_socket_that_floods_sends_too_much_or_idles_is_closed(custom_shop) -> None:
    shop = await custom_shop(base_vars={"LIVE_MAX_FRAMES_PER_MIN": 5, "LIVE_MAX_FRAME_BYTES": 64,
                                        "LIVE_IDLE_TIMEOUT_S": 0.5})
    owner = shop.token("user")
    order_id = await order_for(shop, owner)
    headers = {"Authorization": f"Bearer {owner}"}
    async with shop.http.ws_connect(live_url(shop, order_id), headers=headers) as ws:
        await next_update(ws)
        for _ in range(5):
            await ws.send_str("ping")
            assert await ws.receive_str(timeout=10) == "pong"
        await ws.send_str("ping")  # the sixth within a minute
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    async with shop.http.ws_connect(live_url(shop, order_id), headers=headers) as ws:
        await next_update(ws)
        await ws.send_str("x" * 65)
        closing = await ws.receive(timeout=10)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
    async with shop.http.ws_connect(live_url(shop, order_id), headers=headers) as ws:
        await next_update(ws)
        closing = await ws.receive(timeout=10)  # silent for longer than the idle timeout
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001


async def test_every_socket_gets_an_access_log_line_and_a_trace_event(full_shop: Shop, caplog) -> None:
    shop = full_shop
    tails = {name: shop.runtime.hub.create(name, TailFilters.from_api({}))
             for name in ("rest-shop-gateway", "rest-shop-api")}
    owner = shop.token("user")
    order_id = await order_for(shop, owner)
    with caplog.at_level(logging.INFO, logger="durable.access"):
        async with shop.http.ws_connect(live_url(shop, order_id), headers={"Authorization": f"Bearer {owner}",
                                                                          "X-Request-Id": "live-1"}) as ws:
            await next_update(ws)
            await ws.close(code=4000)

        async def logged() -> dict[str, Any]:
            found = {r.worker: r for r in caplog.records if getattr(r, "method", "") == "WS"
                     and r.request_id == "live-1"}
            return found if len(found) == 2 else {}
        lines = await eventually(logged)
    assert set(lines) == {"rest-shop-gateway", "rest-shop-api"}, [r.getMessage() for r in caplog.records]
    # the client's own code, relayed by the gateway to base
    assert lines["rest-shop-gateway"].status == 101 and lines["rest-shop-gateway"].close_code == 4000
    assert lines["rest-shop-api"].status == 101 and lines["rest-shop-api"].close_code == 4000
    assert lines["rest-shop-gateway"].duration_ms > 0
    for name, tail in tails.items():
        events = [tail.queue.get_nowait() for _ in range(tail.queue.qsize())]
        sockets = [e for e in events if "webSocket" in e["event"] and e.get("requestId") == "live-1"]
        assert len(sockets) == 1, (name, events)
        assert sockets[0]["event"]["response"]["status"] == 101
        assert sockets[0]["event"]["webSocket"]["closeCode"] == 4000
        assert sockets[0]["event"]["webSocket"]["closedBy"] == "client"
        assert "access_token" not in sockets[0]["event"]["request"]["url"]
        shop.runtime.hub.delete(tail.id)
