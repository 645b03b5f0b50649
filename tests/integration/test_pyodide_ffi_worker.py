"""A Worker written as Cloudflare's example 07 and 12 are (`to_js` into Durable Object storage,
`to_js(bytes).buffer` as a body), served on a real socket."""
from __future__ import annotations

from pathlib import Path

import aiohttp

from durable import config as wconfig
from durable.runtime import Runtime
from durable.server import Server, bind

ROOT = Path(__file__).resolve().parents[2]


async def test_to_js_values_are_stored_and_served(tmp_path: Path) -> None:
    runtime = Runtime([wconfig.load(ROOT / "tests" / "fixtures" / "workers" / "cf_ffi" / "wrangler.jsonc")],
                      persist_to=tmp_path, use_registry=False)
    await runtime.start()
    server = Server(runtime.workers["cf-ffi"], bind("127.0.0.1", 0))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            for message in ("hello", "world"):
                async with http.get(f"{server.url}/shop/add/{message}") as resp:
                    assert resp.status == 200
            async with http.get(f"{server.url}/shop/show") as resp:
                assert await resp.text() == "hello,world"
            async with http.get(f"{server.url}/shop/png") as resp:
                assert resp.headers["Content-Type"] == "image/png" and await resp.read() == b"\x89PNG fake"
    finally:
        await server.stop()
        await runtime.close()
