"""A WebSocket message larger than the route takes is refused by the server itself (1009), before
it is buffered: the live-order route reads 1 KiB frames, and the server used to buffer 16 MiB of
one before the route could say no."""
from __future__ import annotations

from typing import Any

import aiohttp

from durable import config as wconfig
from durable.server import Server, bind, websocket_max_bytes
from tests.conftest import BASE_TOML, GATEWAY_TOML


async def test_the_server_closes_a_socket_whose_message_is_over_its_limit_unseen_by_the_app() -> None:
    received: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message)
            await send({"type": "websocket.send", "text": "ok"})

    server = Server(app, bind("127.0.0.1", 0), websocket_max_bytes=1024)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(server.url.replace("http://", "ws://") + "/") as ws:
                await ws.send_bytes(b"x" * 1024)
                assert await ws.receive_str(timeout=10) == "ok"
                await ws.send_bytes(b"x" * (1024 * 1024))
                closing = await ws.receive(timeout=10)
                assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
        assert [len(m["bytes"]) for m in received] == [1024]
    finally:
        await server.stop()


def test_the_shop_s_servers_take_no_bigger_message_than_the_live_route_reads() -> None:
    route = int(wconfig.load(BASE_TOML).vars["LIVE_MAX_FRAME_BYTES"])
    for toml in (BASE_TOML, GATEWAY_TOML):
        for env in (None, "production"):
            assert websocket_max_bytes(wconfig.load(toml, env).vars) == route, (toml, env)
