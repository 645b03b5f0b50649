"""The embedded database for `wrangler dev` and tests: SecantusDB as a managed child process.

SecantusDB (GPL-2.0, the `[embedded]` extra) is a MongoDB-wire-compatible server; we only start
it, speak the wire protocol to it, and stop it. Production points `MONGODB_URI` elsewhere.
"""
from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import PyMongoError

EXECUTABLE = "secantusd-py"


class EmbeddedMongoError(RuntimeError):
    pass


def _executable() -> str:
    beside_python = Path(sys.executable).parent / EXECUTABLE
    found = str(beside_python) if beside_python.exists() else shutil.which(EXECUTABLE)
    if not found:
        raise EmbeddedMongoError(f"{EXECUTABLE} not found: install the [embedded] extra "
                                 f"(pip install -e '.[embedded]') or set MONGODB_URI")
    return found


def _die_with_parent(parent: int) -> None:
    """In the child: be killed when the parent dies, even by kill -9 (Linux), so no orphan server
    keeps the data directory. SIGKILL, not SIGTERM: SecantusDB's SIGTERM handler can deadlock on
    its own stop event (seen under load), and its journal makes a SIGKILL durable."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above: nobody would send it
        os._exit(1)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedMongo:
    """Start on a free port with data under `storage_path`; `uri` once it answers ping."""

    def __init__(self, storage_path: Path, host: str = "127.0.0.1", port: int | None = None,
                 launcher: list[str] | None = None) -> None:
        self.storage_path = Path(storage_path)
        self.host = host
        self.port = port or _free_port(host)
        self.launcher = launcher or []  # run the server through this (e.g. `ip netns exec <host>`)
        # retryWrites=false: a local single server has no failover for a retried write to survive,
        # and SecantusDB keeps a record of every retryable write for 30 min (up to 10,000) that it
        # scans, and past the cap sorts, on every write: writes slowed ~5x after a minute of load
        self.uri = f"mongodb://{host}:{self.port}/?directConnection=true&retryWrites=false"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        self.storage_path.mkdir(parents=True, exist_ok=True)
        with open(self.storage_path / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*self.launcher, _executable(), "--host", self.host, "--port", str(self.port),
                 "--storage-path", str(self.storage_path)],
                stdout=log, stderr=log, start_new_session=True,
                preexec_fn=(functools.partial(_die_with_parent, os.getpid())
                            if sys.platform.startswith("linux") else None))

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise EmbeddedMongoError(f"{EXECUTABLE} exited with {self.proc.returncode}; "
                                     f"see {self.storage_path / 'server.log'}")

    async def start(self, timeout_s: float = 30.0) -> str:
        """Spawn and wait (without blocking the loop) until it answers ping."""
        self.spawn()
        return await self.ready(timeout_s)

    async def ready(self, timeout_s: float = 30.0) -> str:
        """Wait until the spawned server answers ping (stop it if it never does)."""
        deadline = time.monotonic() + timeout_s
        client: AsyncMongoClient = AsyncMongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            while True:
                self._check_alive()
                try:
                    await client.admin.command("ping")
                    return self.uri
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise EmbeddedMongoError(f"{EXECUTABLE} did not answer ping within {timeout_s:.0f} s")
                    await asyncio.sleep(0.05)
        finally:
            await client.close()

    def start_sync(self, timeout_s: float = 30.0) -> str:
        """The same, for synchronous callers (test fixtures)."""
        self.spawn()
        deadline = time.monotonic() + timeout_s
        with MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
            while True:
                self._check_alive()
                try:
                    client.admin.command("ping")
                    return self.uri
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise EmbeddedMongoError(f"{EXECUTABLE} did not answer ping within {timeout_s:.0f} s")
                    time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s` (it may take a few seconds to flush)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def start_for_dev(persist_to: Path) -> EmbeddedMongo | None:
    """Start the dev session's embedded server (data under `<persist_to>/mongo`) and say where it
    is; None, with the reason printed, when it cannot start."""
    mongo = EmbeddedMongo(persist_to / "mongo")
    try:
        await mongo.start()
        (mongo.storage_path / "uri").write_text(mongo.uri)  # for local tools (python -m base.admin)
    except EmbeddedMongoError as exc:
        print(f"✘ [ERROR] {exc}", file=sys.stderr)
        return None
    print(f"⎔ Embedded MongoDB (SecantusDB) on {mongo.uri}, data in {mongo.storage_path}", flush=True)
    return mongo
