"""Serve ASGI apps on sockets we bind ourselves (so port 0 works and the real port is known).

Hypercorn runs inside our asyncio loop; the server is one small class, so another ASGI server
can take its place for production processes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .rpc.tls import MutualTls

log = logging.getLogger("durable.server")


def bind(host: str, port: int, *, fallback_to_any: bool = False) -> socket.socket:
    """Bind and listen on host:port; with `fallback_to_any`, take a free port if that one is busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        if not fallback_to_any or port == 0:
            sock.close()
            raise
        sock.bind((host, 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def base_url(scheme: str, host: str, port: int) -> str:
    """`scheme://host:port`, an IPv6 address in brackets."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return base_url(scheme, host, port)


# The server's limit on one received WebSocket message (hypercorn's default). The runtime applies
# Cloudflare's 1 MiB itself, as Cloudflare does (the object's webSocketError); a worker whose
# sockets take less sets `WEBSOCKET_MAX_MESSAGE_BYTES` in its vars, and the server refuses a
# bigger message (1009) before buffering it.
DEFAULT_WEBSOCKET_MAX_BYTES = 16 * 1024 * 1024


def websocket_max_bytes(worker_vars: dict[str, Any] | None) -> int:
    return int((worker_vars or {}).get("WEBSOCKET_MAX_MESSAGE_BYTES") or DEFAULT_WEBSOCKET_MAX_BYTES)


class Server:
    """One ASGI app on one bound socket, started and stopped from our loop. A received WebSocket
    message over `websocket_max_bytes` closes the socket (1009) before it is buffered whole."""

    def __init__(self, app: Any, sock: socket.socket, *, graceful_timeout_s: float = 5.0,
                 tls: MutualTls | None = None, websocket_max_bytes: int = DEFAULT_WEBSOCKET_MAX_BYTES) -> None:
        self.app = app
        self.sock = sock
        self.url = url_of(sock, "https" if tls is not None else "http")
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._config = Config()
        self._fd = os.dup(sock.fileno())  # hypercorn owns (and closes) this copy; we close `sock`
        self._config.bind = [f"fd://{self._fd}"]
        self._config.accesslog = None
        self._config.errorlog = None
        self._config.loglevel = "WARNING"
        self._config.graceful_timeout = graceful_timeout_s
        self._config.keep_alive_timeout = 75
        self._config.websocket_max_message_size = websocket_max_bytes
        if tls is not None:  # a client without a certificate signed by the CA is refused in the handshake
            self._config.certfile, self._config.keyfile, self._config.ca_certs = tls.cert, tls.key, tls.ca
            self._config.verify_mode = ssl.CERT_REQUIRED

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            serve(self.app, self._config, shutdown_trigger=self._stop.wait))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=self._config.graceful_timeout + 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception as exc:  # a server crash on the way down is logged, not fatal
                log.warning("server %s stopped with %s", self.url, exc)
        self.sock.close()
