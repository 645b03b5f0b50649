"""How code reaches an object: `env.MY_DO` (a namespace), its stubs, and the transports.

A stub reaches its object's host through a transport: `LocalTransport` in this process, an
`rpc.client.HttpTransport` when the class lives in another worker's process, or a cluster's
transport. All carry the same serialized call, so an object behaves the same wherever it lives.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from .. import codec, ids
from ..compat.websocket import is_upgrade
from ..errors import ObjectUnavailable, error_from_wire, error_to_wire
from ..http import Request, Response, make_request
from ..ids import DurableObjectId
from ..observe import otel, tracing
from ..observe.tail import TraceCapture
from .host import ObjectHost
from .model import FETCH, running_object


class Transport(Protocol):
    async def call(self, object_id: DurableObjectId, method: str, payload: bytes) -> bytes: ...


class LocalTransport:
    """Calls an `ObjectHost` in this process, with the same serialized payloads as over HTTP."""

    def __init__(self, host: ObjectHost) -> None:
        self.host = host

    async def call_local(self, object_id: DurableObjectId, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Unserialized call (live objects such as a database handle may cross); gates still apply.
        Plumbing within one worker, not an invocation of the object: no trace event of its own."""
        return await self.host.invoke(object_id, method, args, kwargs)

    async def invoke(self, object_id: DurableObjectId, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Every invocation (RPC or fetch) is a trace event of the worker that defines the class,
        from this worker's own code or another's, with the caller's request id (a child span), as
        a Durable Object invocation is on Cloudflare; and, with span export on, a span."""
        spans = self.host.spans
        tailed = self.host.on_trace is not None and self.host.tracing_wanted(self.host.script_name)
        if not tailed and spans is None:
            return await self.host.invoke(object_id, method, args, kwargs)
        trace = tracing.current()
        if trace is not None:
            trace = trace.child()
        capture = (TraceCapture(self.host.script_name, {"rpc": {"class": self.host.class_name, "method": method}},
                                trace, object_id=str(object_id)) if tailed else None)
        span = None
        if spans is not None and trace is not None:
            span = spans.start(f"{self.host.class_name}.{method}", trace, "server",
                               {"cloudflare.durable_object.class": self.host.class_name, "rpc.method": method,
                                "cloudflare.script_name": self.host.script_name})
        token = tracing.use(trace) if trace is not None else None
        active = otel.activate(spans) if spans is not None else None
        error: BaseException | None = None
        try:
            with capture or contextlib.nullcontext():
                return await self.host.invoke(object_id, method, args, kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if active is not None:
                otel.deactivate(active)
            if token is not None:
                tracing.reset(token)
            if capture is not None:
                self.host.on_trace(capture.event())  # type: ignore[misc]
            if span is not None:
                otel.finish(span, error)

    async def call(self, object_id: DurableObjectId, method: str, payload: bytes) -> bytes:
        try:
            message = codec.decode(payload)
            if method == FETCH:
                args, kwargs = [Request.from_wire(message["request"])], {}
            else:
                args, kwargs = message.get("args", []), message.get("kwargs", {})
            result = await self.invoke(object_id, method, args, kwargs)
            if method == FETCH:
                if not isinstance(result, Response):
                    raise TypeError(f"{self.host.class_name}.fetch() must return a durable.Response, "
                                    f"got {type(result).__name__}")
                result = result.to_wire()
            return codec.encode({"result": result}, what=f"result of {self.host.class_name}.{method}()")
        except Exception as exc:
            return codec.encode({"error": error_to_wire(exc)})


class DurableObjectNamespace:
    """`env.MY_DO`: make ids, get stubs. The same id reaches the same object from any process."""

    def __init__(self, script_name: str, class_name: str, transport: Transport, *,
                 created_as: str | None = None) -> None:
        self.script_name = script_name
        self.class_name = class_name
        self.transport = transport  # LocalTransport, HttpTransport or a cluster's
        # ids derive from the name the class was created with: a renamed class keeps its objects
        self._key = ids.namespace_key(script_name, created_as or class_name)
        # names repeat (a product, a user, a rate-limit bucket): derive each id once
        self._named = functools.lru_cache(maxsize=4096)(functools.partial(ids.id_from_name, self._key))

    def id_from_name(self, name: str) -> DurableObjectId:
        return self._named(name)

    def new_unique_id(self) -> DurableObjectId:
        return ids.new_unique_id(self._key)

    def id_from_string(self, value: str) -> DurableObjectId:
        return ids.id_from_string(self._key, value)

    def get(self, object_id: DurableObjectId) -> DurableObjectStub:
        if not isinstance(object_id, DurableObjectId):
            raise TypeError(f"get() takes a DurableObjectId, got {type(object_id).__name__}")
        return DurableObjectStub(self, object_id)

    def get_by_name(self, name: str) -> DurableObjectStub:
        return self.get(self.id_from_name(name))

    # Cloudflare's spellings
    idFromName = id_from_name
    idFromString = id_from_string
    newUniqueId = new_unique_id
    getByName = get_by_name

    def __repr__(self) -> str:
        return f"<DurableObjectNamespace {self.script_name}.{self.class_name}>"


class DurableObjectStub:
    """A handle to one object: `await stub.method(...)` is RPC; `await stub.fetch(...)` too."""

    def __init__(self, namespace: DurableObjectNamespace, object_id: DurableObjectId) -> None:
        self._namespace = namespace
        self.id = object_id
        self.name = object_id.name

    def __getattr__(self, method: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            transport = self._namespace.transport
            if type(transport) is LocalTransport and _immutable(args) and _immutable(kwargs.values()):
                if running_object.get() is None:  # not from inside an object: no gates to pass
                    return await self._call_in_process(transport, method, args, kwargs)
                return await self._gated(lambda: self._call_in_process(transport, method, args, kwargs))
            what = f"arguments of {self._namespace.class_name}.{method}()"
            payload = codec.encode({"args": list(args), "kwargs": kwargs}, what=what)
            return await self._call(method, payload)

        call.__name__ = method
        return call

    async def local(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call `method` without serializing, on an object hosted in this process only.

        For handles that cannot cross a process boundary (a database client, say); a stub of an
        object that lives in another process refuses with a clear error.
        """
        transport = self._namespace.transport
        if not isinstance(transport, LocalTransport):
            raise ObjectUnavailable(f"{self._namespace.class_name}.{method}() is a local-only call, but this "
                                    f"{self._namespace.class_name} is hosted by {self._namespace.script_name} "
                                    f"in another process")
        return await transport.call_local(self.id, method, list(args), kwargs)

    async def fetch(self, input: Request | str, **init: Any) -> Response:
        request = make_request(input, "http://durable-object/", **init)
        transport = self._namespace.transport
        if type(transport) is LocalTransport:  # one process: objects such as a WebSocket may cross
            return await self._gated(lambda: self._fetch_in_process(transport, request))
        if is_upgrade(request):  # a WebSocket to an object elsewhere: joined over the internal route
            return await self._gated(lambda: transport.connect(self.id, request))
        payload = codec.encode({"request": request.to_wire()})
        return Response.from_wire(await self._call(FETCH, payload))

    async def _call(self, method: str, payload: bytes) -> Any:
        reply = codec.decode(await self._gated(lambda: self._namespace.transport.call(self.id, method, payload)))
        if "error" in reply:
            raise error_from_wire(reply["error"])
        return reply["result"]

    async def _call_in_process(self, transport: LocalTransport, method: str, args: tuple[Any, ...],
                               kwargs: dict[str, Any]) -> Any:
        """An RPC whose arguments are immutable scalars needs no copy on the way in; the result is
        still a copy, and an error still arrives as it would from another process."""
        try:
            result = await transport.invoke(self.id, method, list(args), kwargs)
            if _immutable((result,)):
                return result
            if type(result) is dict and _immutable(result.values()) and all(
                    type(k) is str and "\x00" not in k for k in result):
                return dict(result)  # a flat record: a shallow copy is a whole copy
            return codec.decode(codec.encode(result, what=f"result of {self._namespace.class_name}.{method}()"))
        except Exception as exc:
            raise error_from_wire(error_to_wire(exc)) from None

    async def _fetch_in_process(self, transport: LocalTransport, request: Request) -> Response:
        try:
            response = await transport.invoke(self.id, FETCH, [request], {})
            if not isinstance(response, Response):
                raise TypeError(f"{self._namespace.class_name}.fetch() must return a durable.Response, "
                                f"got {type(response).__name__}")
            return response
        except Exception as exc:  # as it would arrive from another process
            raise error_from_wire(error_to_wire(exc)) from None

    async def _gated(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Around any outgoing call from inside an object: the output gate before, the input gate after."""
        caller = running_object.get()
        if caller is not None:
            await caller.storage.sync()  # output gate for the caller's outgoing message
        try:
            return await call()
        finally:
            if caller is not None:
                await caller.input_gate.enter()  # input gate: don't resume inside someone's blocker

    def __repr__(self) -> str:
        return f"<DurableObjectStub {self._namespace.class_name} {self.id!r}>"


_SCALARS = frozenset({str, bytes, bool, float, int, type(None)})


def _immutable(values: Any) -> bool:
    """Values that cross as they are: immutable, and serializable (ints within BSON's 64 bits)."""
    for value in values:
        kind = type(value)
        if kind not in _SCALARS or (kind is int and not -2**63 <= value < 2**63):
            return False
    return True
