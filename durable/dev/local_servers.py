"""Local stand-ins for outside services (payment providers, sign-in providers), shared by every
process of one dev state directory.

With `wrangler dev --nodes N`, each node runs every worker; a payment or a sign-in started on one
node must be known to the stand-in the others talk to. The first process to start the local servers
records their URLs and keys (`local-providers.json`, 0600, under the worker's state directory,
written under an exclusive file lock); the others use that record while its process lives.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .registry import process_alive

RECORD = "local-providers.json"
Record = dict[str, dict[str, str]]
ANNOUNCED: dict[str, str] = {}  # label → URL a developer opens (`wrangler dev` prints them at start)


def announce(label: str, url: str) -> None:
    """Name a stand-in's page for the dev banner (e.g. where captured mail is read)."""
    ANNOUNCED[label] = url


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


async def claim(state_dir: Path, names: list[str], start: Callable[[list[str]], Awaitable[Record]]) -> Record:
    """The shared servers for `names`: the recorded ones if their process lives, else `start`ed here."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = await asyncio.to_thread(_lock, state_dir / (RECORD + ".lock"))
    try:
        path = state_dir / RECORD
        record: dict[str, Any] = {}
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except ValueError:
                record = {}
        if record.get("pid") != os.getpid() and process_alive(int(record.get("pid", 0))) and \
                all(name in record.get("servers", {}) for name in names):
            return {name: record["servers"][name] for name in names}
        servers = await start(names)
        path.write_text(json.dumps({"pid": os.getpid(), "servers": servers}))
        os.chmod(path, 0o600)
        return servers
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


async def serve_locally(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Run a stand-in's aiohttp app on a free local port: its runner (to clean up) and its URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, f"http://{host}:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
