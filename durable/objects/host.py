"""`ObjectHost`: the one live instance of each id of one class in this process.

It delivers events through the object's input gate, holds results until their writes are
durable (the output gate), resets an instance after an uncaught exception, runs alarms with
retries and keeps the object's accepted WebSockets (which outlive instances).
"""
from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import Context
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ObjectUnavailable
from ..gates import InputGate
from ..ids import DurableObjectId
from ..observe import otel
from ..observe.metrics import ObjectMeter
from ..observe.tail import TraceCapture
from ..storage import DurableObjectStorage, Engine, now_ms
from .model import (
    FETCH,
    AlarmInvocationInfo,
    BlockerTimedOut,
    DurableObject,
    DurableObjectState,
    running_object,
)
from .trampoline import detached

log = logging.getLogger("durable.objects")


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
                if live.inflight == 0 and live.last_used < cutoff and not live.state.input_gate.closed]
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
        return {key for key, live in self._live.items() if live.inflight or live.state.input_gate.closed} | set(self._arriving)

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

    def live_info(self, object_id: str) -> dict[str, Any] | None:
        """An onlooker's view of one live instance (the dashboard); None when not live here."""
        live = self._live.get(object_id)
        if live is None:
            return None
        return {"id": object_id, "name": live.state.id.name, "inflight": live.inflight,
                "idleS": round(time.monotonic() - live.last_used, 1), "sockets": len(self._sockets.get(object_id, ()))}

    def alarms_set(self) -> list[tuple[str, int]]:
        """The alarms armed in this process: (object id, epoch ms), soonest first."""
        loop_now, wall = asyncio.get_running_loop().time(), time.time()
        return sorted(((key, int((wall + timer.when() - loop_now) * 1000)) for key, timer in self._timers.items()),
                      key=lambda item: item[1])

    def live_list(self, limit: int) -> list[dict[str, Any]]:
        """The `limit` live instances here used most recently, most recent first."""
        recent = heapq.nlargest(limit, self._live, key=lambda k: self._live[k].last_used)
        return [info for info in map(self.live_info, recent) if info is not None]

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
        token = running_object.set(state)
        try:
            instance = self.cls(state, self.env)
        finally:
            running_object.reset(token)
        live = self._live[key] = _Live(instance, state)
        return live

    def reset(self, state: DurableObjectState, exc: BaseException) -> None:
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
        ws.owned_by(self, object_id)
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
            if state.input_gate.closed:
                waited = time.perf_counter()
                await state.input_gate.enter()
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
        token = running_object.set(state)
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
                self.reset(state, exc)
                if meter is not None:
                    meter.errors.inc()
                await state.storage.sync()
                raise
        finally:
            running_object.reset(token)
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
        capture = TraceCapture(self.script_name, {"scheduledTime": _iso(scheduled_ms)}, object_id=key)
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
                state.storage.clear_ran_alarm()  # inside the object's output gate
            else:
                self.engine.stage(key).alarm = None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


_RESERVED = frozenset(name for name in vars(DurableObject)) | {"alarm", "ctx", "env", "on_shutdown"}
