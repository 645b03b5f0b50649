"""Service bindings and Durable Object RPC give the same results in-process and over real HTTP."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from durable import Request, codec
from durable import config as wconfig
from durable.asgi import asgi_fetch
from durable.bindings import ServiceBinding
from durable.ids import DurableObjectId
from durable.rpc.client import RemoteTarget, internal_headers
from durable.rpc.wire import INTERNAL_PREFIX, SIGN_AGAIN_HEADER
from durable.runtime import Runtime
from durable.server import Server, bind
from tests.conftest import PEER_TOML


@pytest.fixture
async def two_processes(runtime: Runtime, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Runtime, str]]:
    """`runtime` hosts fx-counter (served on a real socket); `remote` runs fx-peer on its own
    and reaches fx-counter's objects only over HTTP, as a separate process would."""
    server = Server(runtime.workers["fx-counter"], bind("127.0.0.1", 0))
    await server.start()
    remote = Runtime([wconfig.load(PEER_TOML)], persist_to=tmp_path / "remote-state",
                     internal_key=runtime.internal_key, remote={"fx-counter": server.url})
    await remote.start()
    try:
        yield runtime, remote, server.url
    finally:
        await remote.close()
        await server.stop()


async def call(worker, path: str, method: str = "GET") -> tuple[int, object]:
    response = await asgi_fetch(worker, Request(f"http://test{path}", method=method))
    return response.status, await response.json()


async def test_durable_object_rpc_same_in_process_and_over_http(two_processes) -> None:
    local, remote, _ = two_processes
    local_peer, remote_peer = local.workers["fx-peer"], remote.workers["fx-peer"]
    assert await call(local_peer, "/remote-incr/shared", "POST") == (200, {"n": 1})
    assert await call(remote_peer, "/remote-incr/shared", "POST") == (200, {"n": 2})  # the same object
    for kind, expected in [("value", {"type": "ValueError", "message": "bad value 42"}),
                           ("custom", {"type": "OutOfStock", "message": "only 3 left"})]:
        assert await call(local_peer, f"/remote-fail/{kind}") == (200, expected)
        assert await call(remote_peer, f"/remote-fail/{kind}") == (200, expected)


async def test_service_binding_same_in_process_and_over_http(runtime: Runtime) -> None:
    server = Server(runtime.workers["fx-peer"], bind("127.0.0.1", 0))
    await server.start()
    try:
        in_process = runtime.workers["fx-counter"].env.PEER
        over_http = ServiceBinding("fx-peer", lambda: runtime.remote_target("fx-peer"), runtime.http)
        runtime.remote["fx-peer"] = server.url
        results = []
        for binding in (in_process, over_http):
            response = await binding.fetch("/echo/a/b?x=1&status=207", method="PUT", body="payload",
                                           headers={"x-test": "yes"})
            results.append((response.status, await response.json(), response.headers.get("x-echo")))
        assert results[0] == results[1] == (
            207, {"method": "PUT", "path": "/echo/a/b", "query": "x=1&status=207", "body": "payload",
                  "x_test": "yes"}, "yes")
    finally:
        await server.stop()


async def test_unreachable_service_is_a_clear_error(runtime: Runtime) -> None:
    binding = ServiceBinding("nowhere", lambda: None, runtime.http)
    response = await binding.fetch("/x")
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "service_unavailable"


async def test_internal_rpc_endpoint_needs_the_key(two_processes) -> None:
    _, _, url = two_processes
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}{INTERNAL_PREFIX}Counter/{'0' * 64}/count", data=b"") as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_a_full_replay_guard_refuses_calls_for_now_instead_of_forgetting(runtime: Runtime) -> None:
    """Fail closed: a signed call the guard has no room to remember is a retryable 503, not a 401
    (nothing is wrong with it) and never an eviction of a live nonce (that would admit its replay)."""
    worker = runtime.workers["fx-counter"]
    path = f"{INTERNAL_PREFIX}Counter/{'0' * 64}/count"
    target = RemoteTarget("http://127.0.0.1", runtime.internal_key, worker.audience)

    async def signed_call() -> Any:
        headers = internal_headers(target, "POST", path, b"", DurableObjectId("0" * 64))
        return await asgi_fetch(worker, Request(f"http://127.0.0.1{path}", method="POST", headers=headers))
    worker.rpc.nonces.max_entries = len(worker.rpc.nonces._seen)
    reply = await signed_call()
    assert reply.status == 503 and reply.headers.get("retry-after") == "1", reply.body


async def test_an_internal_call_over_the_size_cap_is_refused_before_it_is_read_whole(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The internal route reads a call's body in chunks and stops at the cap (413): a peer cannot
    make a worker buffer any amount before its signature is even checked."""
    import durable.rpc.server
    monkeypatch.setattr(durable.rpc.server, "MAX_CALL_BYTES", 1024)
    worker = runtime.workers["fx-counter"]
    path = f"{INTERNAL_PREFIX}Counter/{'0' * 64}/count"
    body = codec.encode({"args": ["x" * 2048], "kwargs": {}})
    headers = internal_headers(RemoteTarget("http://127.0.0.1", runtime.internal_key, worker.audience), "POST", path,
                               body, DurableObjectId("0" * 64))
    reply = await asgi_fetch(worker, Request(f"http://127.0.0.1{path}", method="POST", headers=headers, body=body))
    assert reply.status == 413, reply.body
    assert (await reply.json())["error"]["code"] == "payload_too_large"
    small = codec.encode({"args": [], "kwargs": {}})
    headers = internal_headers(RemoteTarget("http://127.0.0.1", runtime.internal_key, worker.audience), "POST", path,
                               small, DurableObjectId("0" * 64))
    assert (await asgi_fetch(worker, Request(f"http://127.0.0.1{path}", method="POST", headers=headers,
                                             body=small))).status == 200  # under the cap: answered


async def test_trace_events_capture_logs_exceptions_and_redact(runtime: Runtime) -> None:
    from durable.observe.tail import TailFilters
    session = runtime.hub.create("fx-counter", TailFilters())
    worker = runtime.workers["fx-counter"]
    await asgi_fetch(worker, Request("http://test/log?marker=m1", headers={"Authorization": "Bearer t0ken",
                                                                             "Cookie": "sid=1"}))
    await asgi_fetch(worker, Request("http://test/leak"))
    boom = await asgi_fetch(worker, Request("http://test/boom"))
    events = [session.queue.get_nowait() for _ in range(3)]

    logs = [(log["level"], log["message"][0]) for log in events[0]["logs"]]
    assert ("log", "printed m1") in logs and ("warn", "logged m1") in logs
    headers = events[0]["event"]["request"]["headers"]
    assert headers["authorization"] == "REDACTED" and headers["cookie"] == "REDACTED"
    assert events[0]["outcome"] == "ok" and events[0]["event"]["response"] == {"status": 200}
    assert events[0]["scriptName"] == "fx-counter" and isinstance(events[0]["eventTimestamp"], int)

    secret = worker.env.FX_SECRET
    assert secret not in str(events[1]) and "the secret is [REDACTED]" in str(events[1]["logs"])

    assert boom.status == 500 and b"Traceback" not in boom.body
    assert events[2]["outcome"] == "exception"
    assert events[2]["exceptions"][0]["name"] == "RuntimeError"
    assert events[2]["exceptions"][0]["message"] == "handler exploded"


async def test_alarm_runs_are_trace_events(runtime: Runtime) -> None:
    from durable.observe.tail import TailFilters
    session = runtime.hub.create("fx-counter", TailFilters())
    ns = runtime.workers["fx-counter"].env.ALARMED
    await ns.get(ns.id_from_name("traced")).schedule(5)
    call = await __import__("asyncio").wait_for(session.queue.get(), 10)
    assert call["event"] == {"rpc": {"class": "Alarmed", "method": "schedule"}}  # every invocation is an event
    event = await __import__("asyncio").wait_for(session.queue.get(), 10)
    assert set(event["event"]) == {"scheduledTime"} and event["event"]["scheduledTime"].endswith("Z")
    assert event["outcome"] == "ok" and event["logs"][0]["message"] == ["alarm ran for traced"]


class SignedOnceApp:
    """A service behind signatures that started after the caller signed: a signature it has not
    seen before the `refuse` count runs out is refused (401), with the sign-again mark if `mark`."""

    def __init__(self, refuse: int, mark: bool) -> None:
        self.refuse, self.mark, self.seen = refuse, mark, []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.seen.append(dict(scope["headers"]).get(b"x-test-signature", b"").decode())
        refused = len(self.seen) <= self.refuse
        headers = [(b"content-type", b"application/json")]
        if refused and self.mark:
            headers.append((SIGN_AGAIN_HEADER.encode(), b"1"))
        await send({"type": "http.response.start", "status": 401 if refused else 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize("refuse,mark", [(1, True), (2, True), (1, False)])
async def test_a_call_signed_before_its_callee_started_is_signed_again_once(runtime: Runtime, refuse: int,
                                                                             mark: bool) -> None:
    """A reload's new process refuses what was signed before it started (its replay guard cannot
    know those nonces), having run nothing: the binding signs the call anew and sends it once more.
    Any other 401 is the callee's answer and goes back as it is."""
    app = SignedOnceApp(refuse=refuse, mark=mark)
    server = Server(app, bind("127.0.0.1", 0))
    await server.start()
    signatures = iter(range(1, 100))
    try:
        runtime.remote["signed-peer"] = server.url
        binding = ServiceBinding("signed-peer", lambda: runtime.remote_target("signed-peer"), runtime.http)
        response = await binding.fetch("/orders", method="POST", body="{}",
                                       sign=lambda headers: [("x-test-signature", f"sig-{next(signatures)}")])
        if mark:  # once more, not until it is taken
            assert response.status == (200 if refuse == 1 else 401) and app.seen == ["sig-1", "sig-2"]
            assert SIGN_AGAIN_HEADER not in response.headers
        else:
            assert response.status == 401 and app.seen == ["sig-1"]
    finally:
        await server.stop()
