"""Modules written against Cloudflare's Python Workers API, served as ASGI apps.

A worker module that defines no ASGI `app` may define `class Default(WorkerEntrypoint)` with
`fetch(self, request)` and `scheduled(self, controller, env, ctx)`, or module functions
`on_fetch(request, env, ctx)` / `on_scheduled(controller, env, ctx)` (Cloudflare's older
style, often marked `@handler`). Each may take fewer arguments, as in Cloudflare's examples
(`fetch(self)`, `scheduled(self, controller)`); they are called with what they take.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..env import env as current_env
from ..http import Request, Response


class WorkerEntrypoint:
    """Cloudflare's `WorkerEntrypoint`: made per event with `self.ctx` and `self.env`."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


def handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """Cloudflare's `@handler` marks `on_fetch`/`on_scheduled`; the names alone suffice here."""
    return func


class ExecutionContext:
    """`ctx` of a fetch or scheduled event: work to finish after the answer (`wait_until`)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def wait_until(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    waitUntil = wait_until

    def pass_through_on_exception(self) -> None:
        """Accepted for compatibility: there is no origin behind this worker to fall back to."""

    passThroughOnException = pass_through_on_exception


# `from workers import wait_until`: finish this after the answer, the request's `ctx` not at hand
wait_until = ExecutionContext().wait_until


@dataclass
class ScheduledController:
    """What `scheduled()` receives: which cron fired and when it was due (ms since the epoch)."""
    cron: str
    scheduledTime: int
    type: str = "scheduled"

    @property
    def scheduled_time(self) -> int:
        return self.scheduledTime

    def noRetry(self) -> None:
        """Accepted: a failed scheduled run is not retried here anyway."""

    no_retry = noRetry


@functools.lru_cache(maxsize=1024)
def _positional(function: Callable[..., Any]) -> int | None:
    """How many positional arguments `function` takes; None for any number (or unknown)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


async def _call(func: Callable[..., Any], *args: Any) -> Any:
    """Call with as many of `args` as `func` takes (Cloudflare's examples vary). The count is
    worked out once per function: a signature costs more than a small handler."""
    function = getattr(func, "__func__", func)  # a method made per event: its function, less self
    try:
        n = _positional(function)
    except TypeError:  # unhashable callable
        n = None
    if n is None:
        return await func(*args)
    return await func(*args[:n - 1 if function is not func else n])


class EntrypointApp:
    """The ASGI face of a Cloudflare-style module: fetch events in, Response objects out."""

    def __init__(self, module: Any) -> None:
        default = getattr(module, "Default", None)
        self.entry = default if isinstance(default, type) and issubclass(default, WorkerEntrypoint) else None
        self.on_fetch = getattr(module, "on_fetch", None)
        self.on_scheduled = getattr(module, "on_scheduled", None)

    @classmethod
    def find(cls, module: Any) -> EntrypointApp | None:
        app = cls(module)
        return app if app.entry is not None or app.on_fetch is not None or app.on_scheduled is not None else None

    def _has(self, method: str, function: Callable[..., Any] | None) -> bool:
        return function is not None or (self.entry is not None and hasattr(self.entry, method))

    @property
    def handles_fetch(self) -> bool:
        return self._has("fetch", self.on_fetch)

    @property
    def handles_scheduled(self) -> bool:
        return self._has("scheduled", self.on_scheduled)

    async def _run(self, method: str, function: Callable[..., Any] | None, event: Any) -> Any:
        """The entrypoint's `method` (made per event with ctx and env), else the module's function."""
        env, ctx = current_env._target(), ExecutionContext()
        if self.entry is not None and hasattr(self.entry, method):
            return await _call(getattr(self.entry(ctx, env), method), event, env, ctx)
        assert function is not None
        return await _call(function, event, env, ctx)

    async def fetch(self, request: Request) -> Response:
        if not self.handles_fetch:
            return Response("This worker has no fetch handler", status=500)
        result = await self._run("fetch", self.on_fetch, request)
        if not isinstance(result, Response):
            raise TypeError(f"a fetch handler must return a Response, not {type(result).__name__}")
        return result

    async def scheduled(self, controller: ScheduledController) -> None:
        if self.handles_scheduled:
            await self._run("scheduled", self.on_scheduled, controller)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        request = Request.from_scope(scope, b"".join(chunks))
        response = await self.fetch(request)
        out = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
               if k.lower() != "content-length"]
        out.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else response.body})
