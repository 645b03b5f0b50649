"""Pyodide's FFI names as Cloudflare's Python Workers use them, on CPython: `to_js` values our
bindings take, JsProxy methods, proxies, `jsnull`, and `run_sync` from a thread."""
from __future__ import annotations

import asyncio
import threading

import pytest

from durable.compat.ffi import lend_loop
from js import WebSocketPair
from pyodide.ffi import JsProxy, create_once_callable, create_proxy, jsnull, run_sync, to_js, to_py


def test_to_js_gives_values_the_bindings_take_and_to_py_gives_them_back() -> None:
    messages = to_js(["a", {"n": 1, "raw": b"\x00\x01"}])
    assert messages == ["a", {"n": 1, "raw": messages[1]["raw"]}] and isinstance(messages, JsProxy)
    assert messages[1].n == 1 and messages[1].object_keys() == ["n", "raw"]
    assert messages[1].raw.buffer == b"\x00\x01" and messages[1].raw.byteLength == 2
    assert to_py(messages) == ["a", {"n": 1, "raw": memoryview(b"\x00\x01")}]
    assert to_js({"a": 1}, dict_converter=dict) == {"a": 1}  # Object.fromEntries' idiom: what it makes
    assert to_js([[1]], depth=1)[0] == [1] and not isinstance(to_js([[1]], depth=1)[0], JsProxy)
    assert to_js(to_js([1])) == [1] and to_js(5) == 5


def test_object_methods_on_a_websocket_pair_as_example_15_calls_them() -> None:
    pair = WebSocketPair.new()
    client, server = pair.object_values()
    assert (client, server) == (pair[0], pair[1]) and client.peer is server


def test_proxies_and_once_callables() -> None:
    proxy = create_proxy(lambda x: x + 1)
    assert proxy(1) == 2
    proxy.destroy()
    with pytest.raises(RuntimeError):
        proxy(1)
    once = create_once_callable(lambda: "done")
    assert once() == "done"
    with pytest.raises(RuntimeError):
        once()
    assert not jsnull and to_py(jsnull) is None and repr(jsnull) == "jsnull"


async def test_run_sync_waits_on_the_workers_loop_from_a_thread_and_refuses_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    ran_on: list[int] = []

    async def on_loop() -> str:
        ran_on.append(threading.get_ident())
        await asyncio.sleep(0)
        return "answered"

    def in_thread() -> str:
        lend_loop(threading.get_ident(), loop)
        try:
            return run_sync(on_loop())
        finally:
            lend_loop(threading.get_ident(), None)

    assert await asyncio.to_thread(in_thread) == "answered"
    assert ran_on == [threading.get_ident()]  # it ran on the loop's thread, not the caller's
    coroutine = on_loop()
    with pytest.raises(RuntimeError, match="await"):
        run_sync(coroutine)
    coroutine.close()
