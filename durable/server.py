"""Serve ASGI apps on sockets we bind ourselves (so port 0 works and the real port is known).

uvicorn's httptools protocol runs inside our own event loop (uvloop in the worker processes): on
a Quart hello it answers about twice what hypercorn does (ARCHITECTURE.md, "The HTTP server").
The server is one small class, so another ASGI server can take its place.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .rpc.tls import MutualTls
from .rpc.wire import error_body

log = logging.getLogger("durable.server")


def bind(host: str, port: int, *, fallback_to_any: bool = False) -> socket.socket:
    """Bind and listen on host:port; with `fallback_to_any`, take a free port if that one is busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY only then
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



# The server's limit on one received WebSocket message (uvicorn's default). The runtime applies
# Cloudflare's 1 MiB itself, as Cloudflare does (the object's webSocketError); a worker whose
# sockets take less sets `WEBSOCKET_MAX_MESSAGE_BYTES` in its vars, and the server refuses a
# bigger message (1009) before buffering it.
DEFAULT_WEBSOCKET_MAX_BYTES = 16 * 1024 * 1024
MAX_REQUEST_HEAD_BYTES = 128 * 1024  # URL and headers together, as Cloudflare limits them
KEEP_ALIVE_S = 75  # longer than the idle timeout of the load balancers put in front of us
# When a server stops, how long a connection with no request under way stays open: a request
# already on its way (a connection accepted a moment ago, a kept-alive one reused as we stop) is
# answered, with `Connection: close`, instead of being cut unanswered (ARCHITECTURE.md, "The HTTP server")
DRAIN_IDLE_S = 1.0
_STOPPING_BODY = error_body("service_unavailable", "This server is stopping; retry")


def websocket_max_bytes(worker_vars: dict[str, Any] | None) -> int:
    return int((worker_vars or {}).get("WEBSOCKET_MAX_MESSAGE_BYTES") or DEFAULT_WEBSOCKET_MAX_BYTES)


class _OneSendPerStep:
    """A connection's transport whose writes within one loop step leave as one send: uvicorn
    writes an answer's head and body separately, and on loopback each write is its own syscall
    and segment (ARCHITECTURE.md, "The HTTP server"). Closing sends what is pending first."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools with the limits llhttp lacks. A request head is capped at MAX_REQUEST_HEAD_BYTES
    (a 400), counted on the raw bytes too, since httptools joins a header before our callbacks see
    it. A head must be complete within KEEP_ALIVE_S of the connection opening or of its first byte:
    a client that sends nothing, or trickles, is closed (uvicorn times out only idle keep-alive)."""

    _head_bytes = 0  # in the parser's callbacks: the URL and the headers completed so far
    _raw_bytes = 0   # every chunk received while a head was already under way
    _in_head = False
    _head_timer: asyncio.TimerHandle | None = None
    head_timeout_s: float = KEEP_ALIVE_S
    _draining = False
    _idle_timer: asyncio.TimerHandle | None = None
    _idle_extended = False
    drain_idle_s: float = DRAIN_IDLE_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport
        self.transport = _OneSendPerStep(transport, self.loop)  # type: ignore[assignment]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_idle_timer()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server stops: this connection's next answer is its last (`Connection: close`). One
        with no request under way stays open for `drain_idle_s` first, so a request the client has
        already sent is answered rather than cut (uvicorn closes such a connection at once)."""
        self._draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self.transport.is_closing() and self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.drain_idle_s, self._close_if_idle)

    def _close_if_idle(self) -> None:
        """A head still arriving gets one more window; then the connection closes all the same
        (a trickling client must not hold the stop for its whole grace period)."""
        self._idle_timer = None
        if self._in_head and not self._idle_extended:
            self._idle_extended = True
            self._idle_timer = self.loop.call_later(self.drain_idle_s, self._close_if_idle)
        elif self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def data_received(self, data: bytes) -> None:
        whole = self._in_head  # a chunk that arrives mid-head is head until the head completes
        super().data_received(data)
        if whole and self._in_head and not self.transport.is_closing():
            self._raw_bytes += len(data)  # each count is at most the head's size: neither refuses a good one
            if self._raw_bytes > MAX_REQUEST_HEAD_BYTES:
                self.send_400_response("Request header fields too large.")

    def on_message_begin(self) -> None:
        self._head_bytes, self._raw_bytes, self._in_head = 0, 0, True
        self._arm_head_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        if self._draining:  # a request that came in while we stop: the last on this connection
            self._cancel_idle_timer()
            if self.cycle is not None:
                self.cycle.keep_alive = False

    def handle_websocket_upgrade(self) -> None:
        """No new WebSocket on a server that is stopping: the next process takes it (503, retry)."""
        if not self._draining:
            super().handle_websocket_upgrade()
            return
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                             b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(_STOPPING_BODY), _STOPPING_BODY))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A bad pipelined head while an earlier request still runs: that answer goes out first,
        then the connection closes (its keep-alive off, reading paused)."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        super().send_400_response(msg)

    def _count(self, n: int) -> None:
        """In a parser callback: over the cap, raise (uvicorn answers a parse error with 400)."""
        self._head_bytes += n
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            raise ValueError("request head too large")

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the process (the runtime, the supervisor) owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    """One ASGI app on one bound socket, started and stopped from our loop. Stopping closes the
    socket first, lets every accepted request finish (a kept-alive connection's last answer says
    `Connection: close`) within the grace period, then closes what is left. A received WebSocket
    message over `websocket_max_bytes` closes the socket (1009) before it is buffered whole."""

    def __init__(self, app: Any, sock: socket.socket, *, graceful_timeout_s: float = 5.0,
                 tls: MutualTls | None = None, websocket_max_bytes: int = DEFAULT_WEBSOCKET_MAX_BYTES) -> None:
        self.app = app
        self.sock = sock
        self.url = url_of(sock, "https" if tls is not None else "http")
        self._task: asyncio.Task[None] | None = None
        self._graceful_timeout_s = graceful_timeout_s
        tls_options: dict[str, Any] = {}
        if tls is not None:  # a client without a certificate signed by the CA is refused in the handshake
            tls_options = {"ssl_certfile": tls.cert, "ssl_keyfile": tls.key, "ssl_ca_certs": tls.ca,
                           "ssl_cert_reqs": ssl.CERT_REQUIRED}
        config = uvicorn.Config(
            app, interface="asgi3", http=BoundedHttpToolsProtocol, ws="websockets-sansio", lifespan="off",
            loop="none", log_config=None, access_log=False, proxy_headers=False, server_header=False,
            timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=graceful_timeout_s,  # type: ignore[arg-type]
            ws_max_size=websocket_max_bytes, ws_ping_interval=None, **tls_options)
        self._server = _Uvicorn(config)

    async def start(self) -> None:
        """Serve from now on: the socket is already listening, so nothing is refused meanwhile."""
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.005)  # uvicorn has no started event; start-up is one loop pass
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=self._graceful_timeout_s + 2)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except (Exception, SystemExit) as exc:  # a server crash on the way down is logged, not fatal
                log.warning("server %s stopped with %r", self.url, exc)
        self.sock.close()
