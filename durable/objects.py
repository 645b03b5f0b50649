"""Durable Objects: the base class, ctx, namespaces, stubs and RPC.

An `ObjectHost` keeps the one live instance of each id of one class, delivers events to it
through its input gate, holds results until their writes are durable (output gate), resets an
instance after an uncaught exception and runs alarms. A `DurableObjectNamespace` is the binding
code sees in `env`; its stubs reach the host through a transport: `LocalTransport` in this
process, or `bindings.HttpTransport` when the class lives in another worker's process. Both
carry the same serialized call, so an object behaves the same wherever it lives.
"""
from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context, ContextVar, copy_context
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import codec, ids
from .observe import metrics, otel, tracing
from .observe.metrics import ObjectMeter
from .errors import ObjectUnavailable, error_from_wire, error_to_wire
from .gates import InputGate
from .compat.websocket import is_upgrade
from .http import Request, Response, make_request
from .ids import DurableObjectId
from .storage import DurableObjectStorage, Engine, now_ms
from .observe.tail import TraceCapture

log = logging.getLogger("durable.objects")

# The object whose event the current task is running (None in ordinary worker code).
_current_state: ContextVar[DurableObjectState | None] = ContextVar("durable_current_object", default=None)

FETCH = "fetch"


class DurableObject:
    """Base class of every Durable Object class: `__init__(ctx, env)`, then public async methods.

    Optional handlers: `async fetch(request) -> Response` and `async alarm(alarm_info)`.
    Every other public method (not starting with `_`) is callable through a stub.
    `async on_shutdown()` (our extension) runs when the runtime stops, to close clients.
    `node_local = True` (our extension): in a cluster every node hosts its own instance of each
    id, with storage of its own, never moved: for handles on local resources (a client pool).
    """

    node_local = False

    def __init__(self, ctx: DurableObjectState, env: Any) -> None:
        self.ctx = ctx
        self.env = env


@dataclass(frozen=True, slots=True)
class AlarmInvocationInfo:
    retry_count: int
    is_retry: bool


class DurableObjectState:
    """`ctx`: the object's id, its storage, and control over its concurrency."""

    # A blocker that runs longer resets the object (as Cloudflare's 30 s limit): a stuck
    # initialisation must not hold every caller of the object forever.
    block_timeout_s: float = 30.0

    def __init__(self, object_id: DurableObjectId, storage: DurableObjectStorage, gate: InputGate,
                 host: ObjectHost) -> None:
        self.id = object_id
        self.storage = storage
        self._gate = gate
        self._host = host
        self._background: set[asyncio.Task[Any]] | None = None  # wait_until tasks, kept referenced

    def block_concurrency_while(self, callback: Callable[[], Awaitable[Any]] | Awaitable[Any]) -> asyncio.Task[Any]:
        """Deliver no other event to this object until `callback` finishes.

        Closes the gate immediately (so it works from `__init__`, un-awaited); returns a task
        to await. If the callback raises, the object is reset.
        """
        awaitable = callback() if callable(callback) else callback
        gate = self._gate
        loop = asyncio.get_running_loop()

        async def run_holding() -> Any:
            gate.mark_held()
            try:
                return await _bounded(awaitable, self.block_timeout_s)
            except Exception as exc:
                self._host._reset(self, exc)
                raise
            finally:
                gate.reopen()

        async def run_queued() -> Any:
            async with gate.exclusive():
                try:
                    return await _bounded(awaitable, self.block_timeout_s)
                except Exception as exc:
                    self._host._reset(self, exc)
                    raise

        if gate.held_here():
            return loop.create_task(_await(awaitable))
        if not gate.closed:
            gate.close_now()
            return loop.create_task(run_holding())
        return loop.create_task(run_queued())

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        """Keep a background task alive past the current event (errors are logged)."""
        task = asyncio.ensure_future(awaitable)
        if self._background is None:
            self._background = set()
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- WebSockets (hibernation API): the sockets are the host's, so they outlive instances
    def accept_websocket(self, ws: Any, tags: list[str] | None = None) -> None:
        """Events of `ws` (messages, close) become this object's `webSocketMessage`/`webSocketClose`."""
        self._host.accept_websocket(self.id, ws, list(tags or []))

    def get_websockets(self, tag: str | None = None) -> list[Any]:
        return self._host.websockets(self.id, tag)

    def get_tags(self, ws: Any) -> list[str]:
        return list(ws.tags)

    def set_websocket_auto_response(self, pair: Any = None) -> None:
        """Answer `pair.request` with `pair.response` without waking the object (None: stop)."""
        self._host.set_websocket_auto_response(self.id, pair)

    def get_websocket_auto_response(self) -> Any:
        return self._host.websocket_auto_response(self.id)

    def get_websocket_auto_response_timestamp(self, ws: Any) -> float | None:
        return ws.auto_response_at

    # Cloudflare's spellings (JavaScript's names, as its Python Workers expose them)
    blockConcurrencyWhile = block_concurrency_while
    waitUntil = wait_until
    acceptWebSocket = accept_websocket
    getWebSockets = get_websockets
    getTags = get_tags
    setWebSocketAutoResponse = set_websocket_auto_response
    getWebSocketAutoResponse = get_websocket_auto_response
    getWebSocketAutoResponseTimestamp = get_websocket_auto_response_timestamp


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class BlockerTimedOut(TimeoutError):
    """A `block_concurrency_while` callback ran over its limit: the object is reset."""


async def _bounded(awaitable: Awaitable[Any], limit_s: float) -> Any:
    try:
        async with asyncio.timeout(limit_s) as deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise BlockerTimedOut(f"block_concurrency_while ran over {limit_s:g} s") from None
        raise


class _Live:
    __slots__ = ("instance", "state", "inflight", "last_used", "broken")

    def __init__(self, instance: DurableObject, state: DurableObjectState) -> None:
        self.instance = instance
        self.state = state
        self.inflight = 0
        self.last_used = time.monotonic()
        self.broken = False  # a blocker timed out: calls queued behind it must not run on it


class ObjectHost:
    """Hosts the instances of one Durable Object class in this process."""

    def __init__(self, cls: type[DurableObject], env: Any, engine: Engine, *,
                 script_name: str, class_name: str,
                 on_trace: Callable[[dict[str, Any]], None] | None = None,
                 tracing_wanted: Callable[[str], bool] = lambda script: True,
                 alarm_retries: int = 6, alarm_backoff_s: float = 2.0,
                 sql_dir: Path | str | None = None) -> None:
        self.cls = cls
        self.sql_dir = sql_dir  # SQLite-backed class: each object's database is <sql_dir>/<id>.sqlite
        # the context alarms start in (the runtime puts the worker's env in it): never the context
        # of the request that set the alarm, which a timer would otherwise keep alive until it fires
        self.event_context = Context()
        self.tracing_wanted = tracing_wanted  # is anyone tailing this script? (else skip building RPC events)
        self.env = env
        self.engine = engine
        self.script_name = script_name
        self.class_name = class_name
        self.on_trace = on_trace
        self.alarm_retries = alarm_retries
        self.alarm_backoff_s = alarm_backoff_s
        self._live: dict[str, _Live] = {}
        # events past the cluster guard still loading their object or waiting at its gate: busy
        # already, so a shard hand-off waits for them instead of moving the object under them
        self._arriving: collections.Counter[str] = collections.Counter()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._has_alarm = callable(getattr(cls, "alarm", None))
        engine.on_commit_failure = self._on_commit_failure
        self.resets = 0
        self.meter: ObjectMeter | None = None  # its Prometheus counters, when the runtime has metrics on
        self.spans: otel.Spans | None = None  # its worker's span exporter, when OTLP export is on
        self._sockets: dict[str, list[Any]] = {}  # accepted WebSockets per object: they outlive instances
        self._auto_responses: dict[str, Any] = {}  # per object, like its sockets
        # In a cluster: awaited by the callers that route here (ClusterTransport, the internal RPC
        # route) before each call; raises NotOwner unless this node owns the id.
        self.guard: Callable[[DurableObjectId], Awaitable[None]] | None = None

    @property
    def has_alarm_handler(self) -> bool:
        return self._has_alarm

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Schedule every stored alarm; ones that fell due while we were down fire at once."""
        for object_id, scheduled_ms in self.engine.all_alarms():
            self._schedule(object_id, scheduled_ms)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for live in list(self._live.values()):
            hook = getattr(live.instance, "on_shutdown", None)
            if hook is not None:
                try:
                    await hook()
                except Exception as exc:  # one object's failure must not stop the others' shutdown
                    log.warning("%s.%s on_shutdown failed: %s", self.script_name, self.class_name, exc)
        for live in self._live.values():
            live.state.storage.release()
        self._live.clear()
        await self.engine.close()

    def evict_idle(self, max_idle_s: float) -> int:
        """Drop instances with no event for `max_idle_s` (their storage is all on disk or staged).

        Classes with `on_shutdown` hold resources (clients, pools) and stay pinned.
        """
        if hasattr(self.cls, "on_shutdown"):
            return 0
        cutoff = time.monotonic() - max_idle_s
        idle = [k for k, live in self._live.items()
                if live.inflight == 0 and live.last_used < cutoff and not live.state._gate.closed]
        for key in idle:
            self._live.pop(key).state.storage.release()
            self.engine.forget(key)
        if idle and self.meter is not None:
            self.meter.evictions.inc(len(idle))
        return len(idle)

    @property
    def socket_count(self) -> int:
        return sum(len(sockets) for sockets in self._sockets.values())

    def busy_ids(self) -> set[str]:
        """The objects with an event running, waiting at their gate, or loading their state now."""
        return {key for key, live in self._live.items() if live.inflight or live.state._gate.closed} | set(self._arriving)

    def busy(self, which: Callable[[str], bool]) -> bool:
        """Is an event running (or loading its object) in any object whose id `which` selects?"""
        return any(which(key) for key in self.busy_ids())

    def drop_objects(self, which: Callable[[str], bool]) -> int:
        """This node no longer hosts these ids (their shard moved): forget instances and alarms,
        and close their sockets (1012: reconnect, and the new owner takes them)."""
        for key in [key for key in self._sockets if which(key)]:
            for ws in list(self._sockets.get(key, [])):
                ws.close(1012, "the object moved to another node; reconnect")
            self._sockets.pop(key, None)
            self._auto_responses.pop(key, None)
        for key in [key for key in self._arriving if which(key) and key not in self._live]:
            self.engine.forget(key)  # a load in flight must not install what it read before the move
        keys = [key for key in self._live if which(key)]
        for key in keys:
            storage = self._live.pop(key).state.storage
            storage.revoke(f"{self.class_name} {key[:12]} moved to another node while this call was under way")
            storage.release()
            self.engine.forget(key)
        for key in [key for key in self._timers if which(key)]:
            self._timers.pop(key).cancel()
        return len(keys)

    def adopt_alarms(self, alarms: list[tuple[str, int]]) -> None:
        """Run these stored alarms here (this node just took their shard)."""
        for key, scheduled_ms in alarms:
            if key not in self._timers and self._has_alarm:
                self._schedule(key, scheduled_ms)

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -- instances ------------------------------------------------------------------------
    def _instance(self, object_id: DurableObjectId) -> _Live:
        key = str(object_id)
        live = self._live.get(key)
        if live is not None:
            return live
        gate = InputGate()
        storage = DurableObjectStorage(self.engine, key, gate, on_alarm_change=functools.partial(self._schedule, key),
                                       sql_dir=self.sql_dir)
        state = DurableObjectState(object_id, storage, gate, self)
        token = _current_state.set(state)
        try:
            instance = self.cls(state, self.env)
        finally:
            _current_state.reset(token)
        live = self._live[key] = _Live(instance, state)
        return live

    def _reset(self, state: DurableObjectState, exc: BaseException) -> None:
        """Uncaught exception: the next event builds a fresh instance from storage."""
        key = str(state.id)
        live = self._live.get(key)
        if live is not None and live.state is state:
            live.broken = isinstance(exc, BlockerTimedOut)
            del self._live[key]
            state.storage.release()
            self.resets += 1
            log.warning("%s.%s %s reset after uncaught %s: %s", self.script_name, self.class_name,
                        key[:12], type(exc).__name__, exc)

    def _on_commit_failure(self, object_ids: set[str]) -> None:
        for key in object_ids:
            live = self._live.pop(key, None)
            if live is not None:
                live.state.storage.invalidate()
                live.state.storage.release()
            self.engine.forget(key)

    def _resolve(self, instance: DurableObject, method: str) -> Callable[..., Any]:
        if method == FETCH:
            handler = getattr(instance, "fetch", None)
            if handler is None:
                raise TypeError(f"{self.class_name} has no fetch() handler")
            return handler
        if method.startswith("_") or method in _RESERVED or not callable(getattr(type(instance), method, None)):
            raise TypeError(f"{self.class_name} has no RPC method {method!r}")
        return getattr(instance, method)

    # -- events ---------------------------------------------------------------------------
    def accept_websocket(self, object_id: DurableObjectId, ws: Any, tags: list[str]) -> None:
        ws.tags = tags
        ws._owner = (self, object_id)
        self._sockets.setdefault(str(object_id), []).append(ws)

    def websockets(self, object_id: DurableObjectId, tag: str | None = None) -> list[Any]:
        return [ws for ws in self._sockets.get(str(object_id), []) if tag is None or tag in ws.tags]

    def set_websocket_auto_response(self, object_id: DurableObjectId, pair: Any) -> None:
        if pair is None:
            self._auto_responses.pop(str(object_id), None)
        else:
            self._auto_responses[str(object_id)] = pair

    def websocket_auto_response(self, object_id: DurableObjectId) -> Any:
        return self._auto_responses.get(str(object_id))

    def forget_websocket(self, object_id: DurableObjectId, ws: Any) -> None:
        held = self._sockets.get(str(object_id), [])
        if ws in held:
            held.remove(ws)
        if not held:
            self._sockets.pop(str(object_id), None)

    async def deliver_event(self, object_id: DurableObjectId, method: str, args: list[Any]) -> Any:
        """A runtime event (a WebSocket message or close) to the object, through its input gate."""
        return await detached(self._deliver(object_id, method, args, {}, reserved_ok=True))

    async def invoke(self, object_id: DurableObjectId, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Deliver one event; the caller's cancellation does not cancel the object's work. (In a
        cluster the entry points, ClusterTransport and the internal RPC route, pass the guard first.)"""
        return await detached(self._deliver(object_id, method, args, kwargs))

    async def _deliver(self, object_id: DurableObjectId, method: str, args: list[Any], kwargs: dict[str, Any],
                       *, reserved_ok: bool = False, on_success: Callable[[DurableObjectState], None] | None = None,
                       running_alarm: int | None = None) -> Any:
        key = str(object_id)
        meter = self.meter
        if meter is not None:
            meter.invocations["alarm" if running_alarm is not None else "fetch" if method == "fetch" else "rpc"].inc()
        self._arriving[key] += 1
        try:
            if key not in self._live:
                await self.engine.load(key)  # a cluster engine reads the object's state once
            live = self._instance(object_id)
            state = live.state
            if state._gate.closed:
                waited = time.perf_counter()
                await state._gate.enter()
                if meter is not None:
                    meter.gate_wait.observe(time.perf_counter() - waited)
            if live.broken:  # its blocker timed out while we waited: the instance never became usable
                raise ObjectUnavailable(f"{self.class_name} {key[:12]} was reset (a blocker ran over "
                                        f"{state.block_timeout_s:g} s) while this call waited; nothing ran, retry")
            live.inflight += 1  # in the same step as the line below: never neither arriving nor in flight
        finally:
            self._arriving[key] -= 1
            if not self._arriving[key]:
                del self._arriving[key]
        live.last_used = time.monotonic()
        token = _current_state.set(state)
        if running_alarm is not None:
            state.storage.running_alarm = running_alarm
        try:
            handler = getattr(live.instance, method) if reserved_ok else self._resolve(live.instance, method)
            try:
                result = handler(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
                if on_success is not None:
                    on_success(state)  # same tick as the handler's last write: one atomic batch
            except Exception as exc:
                self._reset(state, exc)
                if meter is not None:
                    meter.errors.inc()
                await state.storage.sync()
                raise
        finally:
            _current_state.reset(token)
            live.inflight -= 1
            if running_alarm is not None:
                state.storage.running_alarm = None
        if not state.storage.synced:  # output gate: nothing leaves before this object's writes are durable
            if otel.active() is None:
                await state.storage.sync()
            else:
                with otel.child_span("durable_object.storage.commit", "internal",
                                     {"cloudflare.durable_object.class": self.class_name}):
                    await state.storage.sync()
        return result

    # -- alarms ---------------------------------------------------------------------------
    def _schedule(self, key: str, scheduled_ms: int | None) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if scheduled_ms is None:
            return
        if not self._has_alarm:
            raise TypeError(f"{self.class_name} must define alarm() to use set_alarm()")
        delay = max(0.0, (scheduled_ms - now_ms()) / 1000)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._spawn_alarm, key, scheduled_ms, 0, context=self.event_context)

    def _spawn_alarm(self, key: str, scheduled_ms: int, retry: int) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self._run_alarm(key, scheduled_ms, retry))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_alarm(self, key: str, scheduled_ms: int, retry: int) -> None:
        object_id = DurableObjectId(key)
        capture = TraceCapture(self.script_name, {"scheduledTime": _iso(scheduled_ms)})
        try:
            with capture:
                info = AlarmInvocationInfo(retry_count=retry, is_retry=retry > 0)
                await self._deliver(object_id, "alarm", [info], {}, reserved_ok=True, running_alarm=scheduled_ms,
                                    on_success=lambda state: self._clear_alarm_if(key, scheduled_ms, state))
            if self.meter is not None:
                self.meter.alarms["ok"].inc()
        except Exception as exc:
            capture.record_exception(exc)
            if self.meter is not None:
                self.meter.alarms["retried" if retry < self.alarm_retries else "failed"].inc()
            if retry < self.alarm_retries:
                if key not in self._timers and self.engine.read_alarm(key) == scheduled_ms:
                    delay = self.alarm_backoff_s * (2 ** retry)
                    self._timers[key] = asyncio.get_running_loop().call_later(
                        delay, self._spawn_alarm, key, scheduled_ms, retry + 1, context=self.event_context)
            else:
                log.error("%s.%s %s alarm failed %d times; giving up", self.script_name, self.class_name,
                          key[:12], retry + 1)
                self._clear_alarm_if(key, scheduled_ms)
        finally:
            if self.on_trace is not None:
                self.on_trace(capture.event())

    def _clear_alarm_if(self, key: str, scheduled_ms: int, state: DurableObjectState | None = None) -> None:
        """Clear the alarm that ran, unless the handler set a new one."""
        if self.engine.read_alarm(key) == scheduled_ms and key not in self._timers:
            if state is not None:
                state.storage._stage().alarm = None  # inside the object's output gate
            else:
                self.engine.stage(key).alarm = None


def _iso(ms: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


_RESERVED = frozenset(name for name in vars(DurableObject)) | {"alarm", "ctx", "env", "on_shutdown"}


# -- transports and stubs -----------------------------------------------------------------
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

    async def _invoke(self, object_id: DurableObjectId, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
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
                                trace) if tailed else None)
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
            result = await self._invoke(object_id, method, args, kwargs)
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
        self._transport = transport
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
            transport = self._namespace._transport
            if type(transport) is LocalTransport and _immutable(args) and _immutable(kwargs.values()):
                if _current_state.get() is None:  # not from inside an object: no gates to pass
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
        transport = self._namespace._transport
        if not isinstance(transport, LocalTransport):
            raise ObjectUnavailable(f"{self._namespace.class_name}.{method}() is a local-only call, but this "
                                    f"{self._namespace.class_name} is hosted by {self._namespace.script_name} "
                                    f"in another process")
        return await transport.call_local(self.id, method, list(args), kwargs)

    async def fetch(self, input: Request | str, **init: Any) -> Response:
        request = make_request(input, "http://durable-object/", **init)
        transport = self._namespace._transport
        if type(transport) is LocalTransport:  # one process: objects such as a WebSocket may cross
            return await self._gated(lambda: self._fetch_in_process(transport, request))
        if is_upgrade(request):  # a WebSocket to an object elsewhere: joined over the internal route
            return await self._gated(lambda: transport.connect(self.id, request))
        payload = codec.encode({"request": request.to_wire()})
        return Response.from_wire(await self._call(FETCH, payload))

    async def _call(self, method: str, payload: bytes) -> Any:
        reply = codec.decode(await self._gated(lambda: self._namespace._transport.call(self.id, method, payload)))
        if "error" in reply:
            raise error_from_wire(reply["error"])
        return reply["result"]

    async def _call_in_process(self, transport: LocalTransport, method: str, args: tuple[Any, ...],
                               kwargs: dict[str, Any]) -> Any:
        """An RPC whose arguments are immutable scalars needs no copy on the way in; the result is
        still a copy, and an error still arrives as it would from another process."""
        try:
            result = await transport._invoke(self.id, method, list(args), kwargs)
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
            response = await transport._invoke(self.id, FETCH, [request], {})
            if not isinstance(response, Response):
                raise TypeError(f"{self._namespace.class_name}.fetch() must return a durable.Response, "
                                f"got {type(response).__name__}")
            return response
        except Exception as exc:  # as it would arrive from another process
            raise error_from_wire(error_to_wire(exc)) from None

    async def _gated(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Around any outgoing call from inside an object: the output gate before, the input gate after."""
        caller = _current_state.get()
        if caller is not None:
            await caller.storage.sync()  # output gate for the caller's outgoing message
        try:
            return await call()
        finally:
            if caller is not None:
                await caller._gate.enter()  # input gate: don't resume inside someone's blocker

    def __repr__(self) -> str:
        return f"<DurableObjectStub {self._namespace.class_name} {self.id!r}>"


async def detached(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` as a task of its own would (its own copy of the context; the caller's
    cancellation stops the waiting, not the work), but start it at once: most object events
    never wait, and then they finish without a task, a shield or two turns of the loop."""
    context = copy_context()
    own = metrics.apart(context)  # with a request metered: the event's CPU is its own, not the request's
    if own is not None:
        metrics.enter(own)
    try:
        first = context.run(coro.send, None)
    except StopIteration as done:
        return done.value
    finally:
        if own is not None:
            metrics.leave(own)
    task = asyncio.get_running_loop().create_task(_Resumed(coro, first), context=context)
    return await asyncio.shield(task)


class _Resumed(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine that was started by hand and yielded `first` (what an asyncio future yields
    to the task driving it), handed to a task to drive from there. Anything thrown in, even
    before the task's first step (a cancellation), reaches the coroutine where it waits."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    def send(self, value: Any) -> Any:
        if self.first is not _TAKEN:
            first, self.first = self.first, _TAKEN
            return first
        return self.coro.send(value)

    def throw(self, *exc: Any) -> Any:
        self.first = _TAKEN
        return self.coro.throw(*exc)

    def close(self) -> None:
        self.coro.close()

    def __await__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)


_TAKEN = object()


_SCALARS = frozenset({str, bytes, bool, float, int, type(None)})


def _immutable(values: Any) -> bool:
    """Values that cross as they are: immutable, and serializable (ints within BSON's 64 bits)."""
    for value in values:
        kind = type(value)
        if kind not in _SCALARS or (kind is int and not -2**63 <= value < 2**63):
            return False
    return True


def current_object() -> DurableObjectState | None:
    """The ctx of the object whose event is running in this task, if any."""
    return _current_state.get()
