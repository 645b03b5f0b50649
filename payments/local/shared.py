"""Local provider servers shared by every process of one dev state directory.

With `wrangler dev --nodes N`, each node runs the payments worker; a payment started on one node
must be known to the provider the others talk to. The first process to start the local servers
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

from durable.registry import process_alive

RECORD = "local-providers.json"
Record = dict[str, dict[str, str]]


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
