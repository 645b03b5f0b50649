"""Pyodide's FFI (`pyodide.ffi`) where Python Workers code touches it, on CPython: there is no
JavaScript on the other side, so a "JS value" is a Python one with the JsProxy methods the
examples and Cloudflare's docs call (`object_values()`, `object_keys()`, `object_entries()`,
`as_object_map()`, `to_py()`), and `to_js` gives values our bindings take as they are (a list,
a dict, bytes behind `.buffer`)."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


class JsProxy:
    """What Pyodide calls a JavaScript object seen from Python: its own enumerable properties
    (a dict's items, an object's attributes) through JavaScript's `Object` functions."""

    def _own(self) -> dict[str, Any]:
        if isinstance(self, dict):
            return dict(self)
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def object_keys(self) -> list[str]:
        return list(self._own())

    def object_values(self) -> list[Any]:
        return list(self._own().values())

    def object_entries(self) -> list[list[Any]]:
        return [[k, v] for k, v in self._own().items()]

    def as_object_map(self) -> dict[str, Any]:
        return self._own()

    def to_py(self, *, depth: int = -1, default_converter: Callable[..., Any] | None = None) -> Any:
        return to_py(self._own(), depth=depth)


class JsObject(dict, JsProxy):  # type: ignore[misc]
    """A JavaScript object made by `to_js` from a dict: a dict (every binding takes it), with
    attribute access and the JsProxy methods."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class JsArray(list, JsProxy):  # type: ignore[misc]
    """A JavaScript Array made by `to_js` from a list or tuple: a list, with the JsProxy methods."""

    def _own(self) -> dict[str, Any]:
        return {str(i): v for i, v in enumerate(self)}

    def to_py(self, *, depth: int = -1, default_converter: Callable[..., Any] | None = None) -> Any:
        return to_py(list(self), depth=depth)


class JsBuffer(JsProxy):
    """A Uint8Array made by `to_js` from bytes: `.buffer` is the bytes (what a Response body or
    an R2 put takes), `.byteLength`, `to_bytes()`, `to_py()` a memoryview as Pyodide gives."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = bytes(data)

    @property
    def buffer(self) -> bytes:
        return self._data

    @property
    def byteLength(self) -> int:  # noqa: N802 (JavaScript's name)
        return len(self._data)

    length = byteLength

    def __len__(self) -> int:
        return len(self._data)

    def __bytes__(self) -> bytes:
        return self._data

    def to_bytes(self) -> bytes:
        return self._data

    def to_py(self, *, depth: int = -1, default_converter: Callable[..., Any] | None = None) -> Any:
        return memoryview(self._data)


class _JsNull:
    """JavaScript's `null` (Python's None is `undefined` in Pyodide's conversions)."""

    _instance: _JsNull | None = None

    def __new__(cls) -> _JsNull:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "jsnull"


jsnull = _JsNull()


def to_js(value: Any, *, depth: int = -1, dict_converter: Callable[[Iterable[Any]], Any] | None = None,
          create_pyproxies: bool = True, default_converter: Callable[..., Any] | None = None,
          pyproxies: Any = None) -> Any:
    """Python → "JavaScript": lists and tuples become arrays, dicts objects (or what
    `dict_converter` makes of their items, as Pyodide's `Object.fromEntries` idiom), bytes a
    Uint8Array; anything else is passed as it is. `depth` limits how far down it converts."""
    if depth == 0 or isinstance(value, JsProxy):
        return value
    deeper = depth - 1 if depth > 0 else -1
    if isinstance(value, (bytes, bytearray, memoryview)):
        return JsBuffer(value)
    if isinstance(value, dict):
        items = [(k, to_js(v, depth=deeper, dict_converter=dict_converter)) for k, v in value.items()]
        return dict_converter(items) if dict_converter is not None else JsObject(items)
    if isinstance(value, (list, tuple)):
        return JsArray(to_js(v, depth=deeper, dict_converter=dict_converter) for v in value)
    return value


def to_py(value: Any, *, depth: int = -1) -> Any:
    """"JavaScript" → Python: arrays to lists, objects to dicts, buffers to memoryviews."""
    if depth == 0:
        return value
    deeper = depth - 1 if depth > 0 else -1
    if isinstance(value, JsBuffer):
        return value.to_py()
    if isinstance(value, dict):
        return {k: to_py(v, depth=deeper) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_py(v, depth=deeper) for v in value]
    if value is jsnull:
        return None
    return value


class _Proxy:
    """What `create_proxy` returns: callable like the object it wraps, until destroyed."""

    def __init__(self, target: Any, once: bool = False) -> None:
        self._target, self._once, self._destroyed = target, once, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._destroyed:
            raise RuntimeError("This borrowed proxy was automatically destroyed" if self._once
                               else "Object has already been destroyed")
        if self._once:
            self._destroyed = True
        return self._target(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def destroy(self) -> None:
        self._destroyed = True


def create_proxy(obj: Any, *, capture_this: bool = False, roundtrip: bool = True) -> Any:
    """A proxy that stays alive until `destroy()` (on CPython nothing is freed early anyway)."""
    return _Proxy(obj)


def create_once_callable(fn: Callable[..., T], *, _may_syncify: bool = False) -> Callable[..., T]:
    """A callable that may be called once (a second call raises, as Pyodide's)."""
    return _Proxy(fn, once=True)


_loops: dict[int, asyncio.AbstractEventLoop] = {}  # thread id → the event loop its sync work belongs to
_lock = threading.Lock()


def lend_loop(thread_id: int, loop: asyncio.AbstractEventLoop | None) -> None:
    """Say which event loop sync code running in `thread_id` may wait on (workers.wsgi does,
    for the thread it runs a WSGI app in); None takes it back."""
    with _lock:
        if loop is None:
            _loops.pop(thread_id, None)
        else:
            _loops[thread_id] = loop


def run_sync(awaitable: Awaitable[T]) -> T:
    """Wait for `awaitable` from sync code running off the event loop (a WSGI app in its
    thread): it runs on the worker's loop, this thread blocks until it is done."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_sync cannot wait on the event loop's own thread: use await")
    loop = _loops.get(threading.get_ident())
    if loop is None:  # no worker's loop lent to this thread: a loop of its own
        return asyncio.run(_as_coroutine(awaitable))
    return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), loop).result()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
