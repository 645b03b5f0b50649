"""What a workflow's `run(event, step)` uses: `step.do` (a callback, or a decorator with
`depends=[...]`/`concurrent=True` as Cloudflare's Python Workflows have it), `step.sleep`,
`step.sleep_until`, `step.wait_for_event`. A step's result is stored before the next step starts;
replayed, a stored step answers from storage without running."""
from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .instance import WorkflowInstance

DEFAULT_RETRIES = {"limit": 5, "delay": "10 seconds", "backoff": "exponential"}  # Cloudflare's defaults
DEFAULT_TIMEOUT = "10 minutes"
_UNITS = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
          "month": 2592000, "year": 31536000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


class NonRetryableError(Exception):
    """Raised in a step: the step fails at once (no retries) and the workflow errors."""


class WorkflowTimeoutError(Exception):
    """A step ran over its timeout, or an event did not come within `wait_for_event`'s."""


class WorkflowEntrypoint:
    """Base class of a workflow: `async def run(self, event, step)`; `self.env` as a worker's."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


def seconds(duration: Any) -> float:
    """Cloudflare's durations: a number of milliseconds, or "10 seconds", "1 minute", "2 hours"…"""
    if isinstance(duration, (int, float)):
        return float(duration) / 1000
    match = _DURATION.match(str(duration).lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"{duration!r} is not a duration (\"10 seconds\", \"5 minutes\", or milliseconds)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _epoch_s(when: Any) -> float:
    if isinstance(when, datetime):
        return when.timestamp()
    return float(when) / 1000  # JavaScript's Date.getTime(): milliseconds


class Step:
    def __init__(self, instance: WorkflowInstance, generation: int = 0) -> None:
        self._instance = instance
        self._generation = generation  # in every key: a restarted run never reads an earlier run's steps
        self._seen: Counter[str] = Counter()  # a name used again is another step (name, 2nd), as Cloudflare counts
        self._pending: set[asyncio.Future[Any]] = set()

    def _key(self, kind: str, name: str) -> str:
        self._seen[f"{kind}:{name}"] += 1
        return f"g{self._generation}:{kind}:{name}:{self._seen[f'{kind}:{name}']}"

    def cancel_pending(self) -> None:
        for task in self._pending:
            task.cancel()

    def do(self, name: str, callback: Callable[..., Any] | None = None, *, depends: list[Any] | None = None,
           concurrent: bool = False, config: dict[str, Any] | None = None) -> Any:
        """`await step.do(name, fn)`, or `@step.do(name)` on a function then `await fn()`."""
        if callback is None:
            return lambda fn: StepFunction(self, name, self._key("step", name), fn, depends or [], concurrent, config)
        return self._run(name, self._key("step", name), callback, (), config)

    async def _run(self, name: str, key: str, callback: Callable[..., Any], args: tuple[Any, ...],
                   config: dict[str, Any] | None) -> Any:
        await self._instance.checkpoint()
        stored = await self._instance.ctx.storage.get(key)
        if stored is not None:
            return stored["value"]
        value = await _attempts(name, callback, args, config or {})
        await self._instance.record(key, {"value": value})
        return value

    async def sleep(self, name: str, duration: Any) -> None:
        await self._sleep_until(name, time.time() + seconds(duration))

    async def sleep_until(self, name: str, timestamp: Any) -> None:
        await self._sleep_until(name, _epoch_s(timestamp))

    async def _sleep_until(self, name: str, wake_s: float) -> None:
        key = self._key("sleep", name)
        await self._instance.checkpoint()
        stored = await self._instance.ctx.storage.get(key)
        if stored is None:
            await self._instance.record(key, {"wake": wake_s})
            stored = {"wake": wake_s}
        while (left := stored["wake"] - time.time()) > 0:  # woken early by pause or terminate: look again
            await self._instance.wait_for_signal(left)
            await self._instance.checkpoint()

    async def wait_for_event(self, name: str, event_type: Any = None, timeout: Any = "24 hours") -> Any:
        """The next event of `event_type` sent to this instance (or sent before it asked)."""
        if isinstance(event_type, dict):  # JavaScript's form: (name, {type, timeout})
            event_type, timeout = event_type["type"], event_type.get("timeout", timeout)
        key = self._key("event", name)
        await self._instance.checkpoint()
        stored = await self._instance.ctx.storage.get(key)
        if stored is not None and "value" in stored:
            return stored["value"]
        if stored is None:  # the deadline is stored too: a replay does not start the wait afresh
            stored = {"deadline": time.time() + seconds(timeout)}
            await self._instance.record(key, stored)
        while (event := await self._instance.take_event(str(event_type))) is None:
            left = stored["deadline"] - time.time()
            if left <= 0:
                raise WorkflowTimeoutError(f"no {event_type!r} event within {timeout} ({name})")
            await self._instance.waiting(left)
            await self._instance.checkpoint()
        await self._instance.record(key, {"value": event})
        return event

    waitForEvent = wait_for_event  # noqa: N815 (JavaScript's name)
    sleepUntil = sleep_until  # noqa: N815


class StepFunction:
    """A decorated step: awaiting it runs its dependencies first (together with `concurrent`) and
    hands their results to it; within one run it runs once however often it is awaited."""

    def __init__(self, step: Step, name: str, key: str, fn: Callable[..., Any], depends: list[Any],
                 concurrent: bool, config: dict[str, Any] | None) -> None:
        # its key is taken where it is declared, so a replay gives each the same key whatever the
        # order its dependencies finish in
        self._step, self.name, self.key, self._fn, self._depends = step, name, key, fn, depends
        self._concurrent, self._config = concurrent, config
        self._result: asyncio.Future[Any] | None = None

    def __call__(self) -> Awaitable[Any]:
        if self._result is None:
            self._result = asyncio.ensure_future(self._run())
            self._step._pending.add(self._result)
            self._result.add_done_callback(self._step._pending.discard)
        return self._result

    async def _run(self) -> Any:
        if self._concurrent:
            results = await asyncio.gather(*(dependency() for dependency in self._depends))
        else:
            results = [await dependency() for dependency in self._depends]
        return await self._step._run(self.name, self.key, self._fn, tuple(results), self._config)


async def _attempts(name: str, callback: Callable[..., Any], args: tuple[Any, ...], config: dict[str, Any]) -> Any:
    """Run a step's callback with its retries (limit, delay, backoff) and timeout."""
    retries = {**DEFAULT_RETRIES, **(config.get("retries") or {})}
    timeout_s = seconds(config.get("timeout", DEFAULT_TIMEOUT))
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(timeout_s):
                result = callback(*args)
                return await result if inspect.isawaitable(result) else result
        except NonRetryableError:
            raise
        except TimeoutError as exc:
            error: Exception = WorkflowTimeoutError(f"step {name!r} ran over {config.get('timeout', DEFAULT_TIMEOUT)}")
            error.__cause__ = exc
        except Exception as exc:  # noqa: BLE001 - a step's failure is retried, as Cloudflare retries it
            error = exc
        if attempt > int(retries["limit"]):
            raise error
        delay = seconds(retries["delay"])
        backoff = retries.get("backoff", "exponential")
        factor = attempt if backoff == "linear" else 2 ** (attempt - 1) if backoff == "exponential" else 1
        await asyncio.sleep(delay * factor)
