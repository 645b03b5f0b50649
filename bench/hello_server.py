"""A Quart hello-world on one HTTP server and event loop, in a process of its own.

`python -m bench.hello_server {ours|hypercorn} {asyncio|uvloop}` prints its URL and serves until
killed; bench/server_bench.py drives it. `hypercorn` is the server every worker ran on before
durable/server.py moved to uvicorn: the baseline, measured in the same run.
"""
from __future__ import annotations

import asyncio
import sys

from bench.workers.hello.app import app
from durable import event_loop
from durable.server import Server, bind, url_of


async def serve(server: str) -> None:
    sock = bind("127.0.0.1", 0)
    print(url_of(sock), flush=True)
    if server == "hypercorn":
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config
        config = Config()
        config.bind, config.accesslog, config.errorlog = [f"fd://{sock.fileno()}"], None, None
        await hypercorn_serve(app, config)  # type: ignore[arg-type]
    else:
        await Server(app, sock).start()
        await asyncio.Event().wait()


if __name__ == "__main__":
    event_loop.run(serve(sys.argv[1]), sys.argv[2])
