"""`GET /metrics` for Prometheus, on an operator's listener, never a worker's public one.

`wrangler dev` adds it to each process's tail API listener (the banner prints the URL);
`wrangler serve --metrics-port` gives each worker a listener of its own, on the internal address,
and with `METRICS_TOKEN` set a scrape needs `Authorization: Bearer <token>` (Prometheus:
`authorization: {credentials: …}`).
"""
from __future__ import annotations

import hmac
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client.registry import Collector

from ..dev.registry import process_alive
from .metrics import exposition

METRICS_PATH = "/metrics"
TARGETS_DIR = "metrics"  # under the state directory: one Prometheus file_sd file per dev process


def metrics_handler(collectors: list[Collector], token: str | None = None
                    ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The scrape handler; with `token`, a scrape must bear it (compared in constant time)."""

    async def metrics(request: web.Request) -> web.Response:
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not (given.startswith("Bearer ")
                    and hmac.compare_digest(given[len("Bearer "):].strip().encode(), token.encode())):
                return web.Response(status=401, text="send Authorization: Bearer <METRICS_TOKEN>\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        body, content_type = exposition(collectors, request.headers.get("Accept", ""))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response
    return metrics


def create_metrics_app(collectors: list[Collector], token: str | None = None) -> web.Application:
    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics_handler(collectors, token))
    return app


def announce_target(state_dir: Path, name: str, url: str, labels: dict[str, str]) -> Path:
    """Write this process's scrape target where the shipped Prometheus config discovers it
    (`file_sd_configs` over `<state>/metrics/*.json`): dev ports are chosen at random."""
    folder = state_dir / TARGETS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*-*.json"):  # a process killed outright left its file: not a target now
        pid = stale.stem.rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            stale.unlink(missing_ok=True)
    path = folder / f"{name}.json"
    temporary = path.with_suffix(".tmp")  # Prometheus must never read a half-written file
    temporary.write_text(json.dumps([{"targets": [urlsplit(url).netloc], "labels": labels}]))
    os.replace(temporary, path)
    return path
