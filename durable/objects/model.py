"""The Durable Object model code sees: the base class, `ctx` (DurableObjectState) and the
alarm's info; and which object's event the current task runs, which stubs need for the gates."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..gates import InputGate
from ..ids import DurableObjectId
from ..storage import DurableObjectStorage

if TYPE_CHECKING:
    from .host import ObjectHost

# The object whose event the current task is running (None in ordinary worker code).
running_object: ContextVar[DurableObjectState | None] = ContextVar("durable_current_object", default=None)

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
        self.input_gate = gate  # the runtime's: the host and stubs pass through it
        self._host = host
        self._background: set[asyncio.Task[Any]] | None = None  # wait_until tasks, kept referenced

    def block_concurrency_while(self, callback: Callable[[], Awaitable[Any]] | Awaitable[Any]) -> asyncio.Task[Any]:
        """Deliver no other event to this object until `callback` finishes.

        Closes the gate immediately (so it works from `__init__`, un-awaited); returns a task
        to await. If the callback raises, the object is reset.
        """
        awaitable = callback() if callable(callback) else callback
        gate = self.input_gate
        loop = asyncio.get_running_loop()

        async def run_holding() -> Any:
            gate.mark_held()
            try:
                return await _bounded(awaitable, self.block_timeout_s)
            except Exception as exc:
                self._host.reset(self, exc)
                raise
            finally:
                gate.reopen()

        async def run_queued() -> Any:
            async with gate.exclusive():
                try:
                    return await _bounded(awaitable, self.block_timeout_s)
                except Exception as exc:
                    self._host.reset(self, exc)
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


def current_object() -> DurableObjectState | None:
    """The ctx of the object whose event is running in this task, if any."""
    return running_object.get()
