"""The HTTP server under every worker (durable/server.py), on a real socket with raw HTTP/1.1:
pipelining, `Expect: 100-continue`, chunked uploads, the cap on a request's head, and a stop that
answers what it accepted (with `Connection: close`) and accepts nothing more."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from durable.runtime import Runtime
from durable.server import (
    DRAIN_IDLE_S,
    MAX_REQUEST_HEAD_BYTES,
    BoundedHttpToolsProtocol,
    Server,
    bind,
)

pytestmark = pytest.mark.asyncio


class EchoApp:
    """Answers with the method, path and body length; `/slow` waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            self.slow_started.set()
            await self.release.wait()
        text = f"{scope['method']} {scope['path']} {len(body)}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": text})


@pytest.fixture
async def served() -> AsyncIterator[tuple[EchoApp, Server]]:
    app = EchoApp()
    server = Server(app, bind("127.0.0.1", 0), graceful_timeout_s=5)
    await server.start()
    try:
        yield app, server
    finally:
        app.release.set()
        await server.stop()


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.sock.getsockname()[:2]
    return await asyncio.open_connection(host, port)


async def stop_accepting(server: Server) -> asyncio.Future[None]:
    """Begin the server's stop; return (the stop under way) once its listening socket refuses."""
    stopping = asyncio.ensure_future(server.stop())
    host, port = server.sock.getsockname()[:2]
    while True:  # the listening socket closes first
        try:
            _, late = await asyncio.open_connection(host, port)
        except OSError:
            return stopping
        late.close()
        await asyncio.sleep(0.01)


async def response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """One response: its status line, headers (lower-case names) and body (by Content-Length)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return head[0], headers, body


async def test_pipelined_requests_are_answered_in_order(served: tuple[EchoApp, Server]) -> None:
    reader, writer = await connect(served[1])
    writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
    bodies = [(await response(reader))[2] for _ in range(3)]
    assert bodies == [b"GET /one 0", b"POST /two 3", b"GET /three 0"]
    writer.close()


async def test_expect_100_continue_then_the_body(served: tuple[EchoApp, Server]) -> None:
    reader, writer = await connect(served[1])
    writer.write(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"hello")
    status, _, body = await response(reader)
    assert status == "HTTP/1.1 200 OK" and body == b"PUT /upload 5"
    writer.close()


async def test_a_chunked_upload_arrives_whole(served: tuple[EchoApp, Server]) -> None:
    reader, writer = await connect(served[1])
    writer.write(b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for chunk in (b"a" * 1000, b"b" * 24):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    assert (await response(reader))[2] == b"POST /chunks 1024"
    writer.close()


async def test_a_request_head_over_the_cap_is_a_400_and_the_server_goes_on(served: tuple[EchoApp, Server]) -> None:
    reader, writer = await connect(served[1])
    lines = [b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(MAX_REQUEST_HEAD_BYTES // 1000 + 2)]
    writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n" + b"".join(lines) + b"\r\n")
    status, _, _ = await response(reader)
    assert status.startswith("HTTP/1.1 400")
    writer.close()
    reader, writer = await connect(served[1])
    writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\n" + b"".join(lines[:len(lines) // 2]) + b"\r\n")
    assert (await response(reader))[2] == b"GET /small 0"
    writer.close()


async def test_one_endless_header_is_refused_near_the_cap(served: tuple[EchoApp, Server]) -> None:
    """httptools hands over a header only once it ends: the raw bytes of an unfinished head count,
    so the server answers 400 and closes instead of buffering the header for ever."""
    reader, writer = await connect(served[1])
    writer.write(b"GET /endless HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    sent, refused = 0, False
    try:
        while sent < 8 * MAX_REQUEST_HEAD_BYTES:
            writer.write(b"v" * 16384)
            await writer.drain()
            sent += 16384
            await asyncio.sleep(0)  # let a reset the server caused reach this transport
            if writer.transport.is_closing():
                raise ConnectionResetError
    except ConnectionError:
        refused = True  # the server closed the connection under the writes
    try:
        status = (await response(reader))[0]
        refused = status.startswith("HTTP/1.1 400")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the 400 was lost to the reset our own late writes caused
    assert refused and sent < 8 * MAX_REQUEST_HEAD_BYTES, sent
    writer.close()


async def test_a_connection_that_sends_no_complete_head_is_closed(served: tuple[EchoApp, Server],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BoundedHttpToolsProtocol, "head_timeout_s", 0.3)
    silent_reader, silent = await connect(served[1])
    trickle_reader, trickle = await connect(served[1])
    trickle.write(b"GET /never-finished HTTP/1.1\r\nHost: x\r\n")
    assert await asyncio.wait_for(silent_reader.read(), 10) == b""  # closed, not held open for ever
    assert await asyncio.wait_for(trickle_reader.read(), 10) == b""
    reader, writer = await connect(served[1])  # a prompt client is served as before
    writer.write(b"GET /prompt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await response(reader))[2] == b"GET /prompt 0"
    for w in (silent, trickle, writer):
        w.close()


async def test_stop_answers_the_accepted_request_with_connection_close_and_accepts_no_more(
        served: tuple[EchoApp, Server]) -> None:
    app, server = served
    reader, writer = await connect(server)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await app.slow_started.wait()
    stopping = await stop_accepting(server)
    app.release.set()
    status, headers, body = await response(reader)
    assert status == "HTTP/1.1 200 OK" and body == b"GET /slow 0" and headers.get("connection") == "close"
    assert await reader.read() == b""  # then the connection closes
    await stopping


async def test_an_answer_leaves_in_one_send(served: tuple[EchoApp, Server]) -> None:
    """Head and body go out as one write, so a client's first read holds the whole answer (two
    writes cost two syscalls and two segments each way on every request)."""
    host, port = served[1].sock.getsockname()[:2]

    def first_reads() -> list[bytes]:
        with socket.create_connection((host, port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reads = []
            for _ in range(50):
                sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                reads.append(sock.recv(65536))
            return reads

    reads = await asyncio.to_thread(first_reads)
    assert all(read.endswith(b"\r\n\r\nGET /x 0") for read in reads), [r for r in reads if not r.endswith(b"0")][:1]


async def test_a_request_sent_as_the_server_stops_is_answered_not_cut(served: tuple[EchoApp, Server]) -> None:
    """A connection accepted a moment before the stop, its request not read yet, and a kept-alive
    one between requests: a request on either, sent once the server has stopped accepting, is
    answered (with `Connection: close`); a connection that sends nothing is closed after the
    drain window. (uvicorn alone closes both at once: the client sees its request cut.)"""
    app, server = served
    fresh_reader, fresh = await connect(server)
    kept_reader, kept = await connect(server)
    kept.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await response(kept_reader))[2] == b"GET /first 0"
    idle_reader, idle = await connect(server)
    while len(server._server.server_state.connections) < 3:  # all three accepted
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    stop_began = loop.time()
    stopping = await stop_accepting(server)
    fresh.write(b"GET /fresh HTTP/1.1\r\nHost: x\r\n\r\n")
    kept.write(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    for reader, expected in ((fresh_reader, b"GET /fresh 0"), (kept_reader, b"GET /second 0")):
        status, headers, body = await asyncio.wait_for(response(reader), 10)
        assert status == "HTTP/1.1 200 OK" and body == expected and headers.get("connection") == "close"
        assert await reader.read() == b""
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # nothing sent: closed after the window
    assert loop.time() - stop_began >= DRAIN_IDLE_S * 0.9  # (uvicorn alone closes it at once)
    await asyncio.wait_for(stopping, 10)
    for writer in (fresh, kept, idle):
        writer.close()


async def test_a_request_cut_at_the_end_of_the_grace_period_is_a_retryable_503(runtime: Runtime) -> None:
    """What a stop's grace period cannot wait for is cancelled; the worker answers it with the
    error envelope, 503 and Retry-After (the client may come back), not uvicorn's bare 500."""
    worker = runtime.workers["fx-counter"]
    started = asyncio.Event()

    async def endless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        await asyncio.Event().wait()

    healthy, worker.app = worker.app, endless  # type: ignore[assignment]
    server = Server(worker, bind("127.0.0.1", 0), graceful_timeout_s=0.2)
    await server.start()
    try:
        reader, writer = await connect(server)
        writer.write(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        await started.wait()
        await server.stop()
        status, headers, body = await asyncio.wait_for(response(reader), 10)
        assert status.startswith("HTTP/1.1 503") and headers.get("retry-after") == "1"
        assert json.loads(body)["error"]["code"] == "service_unavailable"
        writer.close()
    finally:
        await server.stop()
        worker.app = healthy


async def test_a_websocket_asked_for_as_the_server_stops_is_refused_with_a_retryable_503(
        served: tuple[EchoApp, Server]) -> None:
    """A WebSocket would outlive the stop (and be cut by it): the next process takes it."""
    _, server = served
    reader, writer = await connect(server)
    while len(server._server.server_state.connections) < 1:
        await asyncio.sleep(0.01)
    stopping = await stop_accepting(server)
    writer.write(b"GET /live HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    status, headers, body = await asyncio.wait_for(response(reader), 10)
    assert status.startswith("HTTP/1.1 503") and headers.get("retry-after") == "1"
    assert json.loads(body)["error"]["code"] == "service_unavailable"
    assert await reader.read() == b""
    await asyncio.wait_for(stopping, 10)
    writer.close()
