"""One workflow instance: a Durable Object of the workflow's own namespace. Its alarm drives the
run; while the run is alive it keeps the alarm a few seconds ahead (a heartbeat), so a process
killed mid-run has an alarm that fires again after the restart (or on the node that takes the
shard), and the run is replayed: stored steps answer from storage, the rest run."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..compat.ffi import JsObject
from ..objects import DurableObject
from .steps import NonRetryableError, Step

META = "meta"
HEARTBEAT_S = 5.0
LIVE = ("queued", "running", "waiting")  # what the alarm drives
FINAL = ("complete", "errored", "terminated")


class _Stopped(BaseException):
    """The run must stop where it is: terminated or restarted. A BaseException, so a workflow's
    own `except Exception` around a step does not take it for the step's failure."""


def class_name(name: str) -> str:
    """The Durable Object class name of workflow `name` (`-` spelled `__`, so no two share one)."""
    return f"Workflow_{name.replace('-', '__')}"


def instance_class(workflow: type, name: str) -> type[DurableObject]:
    """The Durable Object class whose objects are the instances of `workflow`."""
    return type(class_name(name), (WorkflowInstance,), {"workflow": workflow})


class WorkflowInstance(DurableObject):
    workflow: type = object

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self._running = False
        self._signal = asyncio.Event()  # an event, a pause, resume, terminate or restart happened
        self._generation = -1
        self._again = False  # an alarm came while the run was alive: look again once it ends

    # -- what the binding calls -----------------------------------------------------------
    async def create(self, instance_id: str, params: Any) -> bool:
        if await self.ctx.storage.get(META) is not None:
            return False
        await self.ctx.storage.put(META, {"id": instance_id, "status": "queued", "params": params,
                                          "created": time.time() * 1000, "generation": 0})
        await self.ctx.storage.set_alarm(time.time() * 1000)
        return True

    async def exists(self) -> bool:
        return await self.ctx.storage.get(META) is not None

    async def status(self) -> dict[str, Any]:
        meta = await self.ctx.storage.get(META) or {"status": "unknown"}
        answer: dict[str, Any] = {"status": meta["status"]}
        if "output" in meta:
            answer["output"] = meta["output"]
        if "error" in meta:
            answer["error"] = meta["error"]
        return answer

    async def pause(self) -> None:
        await self._set("paused", only_from=LIVE)

    async def resume(self) -> None:
        if await self._set("queued", only_from=("paused",)):
            await self.ctx.storage.set_alarm(time.time() * 1000)

    async def terminate(self) -> None:
        if await self._set("terminated", only_from=(*LIVE, "paused")):
            await self.ctx.storage.delete_alarm()

    async def restart(self) -> None:
        """From the beginning: every stored step forgotten, the params kept."""
        meta = await self.ctx.storage.get(META)
        if meta is None:
            return
        meta = {k: v for k, v in meta.items() if k not in ("output", "error")}
        await self.ctx.storage.delete_all()  # every step and event, however many
        await self.ctx.storage.put(META, {**meta, "status": "queued", "generation": meta["generation"] + 1})
        await self.ctx.storage.set_alarm(time.time() * 1000)
        self._signal.set()

    async def send_event(self, event_type: str, payload: Any) -> None:
        queue = await self.ctx.storage.get(f"events:{event_type}") or []
        await self.ctx.storage.put(f"events:{event_type}", [*queue, {"type": event_type, "payload": payload,
                                                                    "timestamp": time.time() * 1000}])
        self._signal.set()

    async def _set(self, status: str, only_from: tuple[str, ...]) -> bool:
        meta = await self.ctx.storage.get(META)
        if meta is None or meta["status"] not in only_from:
            return False
        await self.ctx.storage.put(META, {**meta, "status": status})
        self._signal.set()
        return True

    # -- the run ----------------------------------------------------------------------------
    async def alarm(self, info: Any = None) -> None:
        if self._running:  # a heartbeat, or a restart's alarm while the old run is still stopping
            self._again = True
            await self.ctx.storage.set_alarm(time.time() * 1000 + HEARTBEAT_S * 1000)  # never none while live
            return
        self._running = True
        try:
            while True:
                self._again = False
                meta = await self.ctx.storage.get(META)
                if meta is None or meta["status"] not in LIVE:
                    return
                await self._drive(meta)
                if not self._again:
                    return
        finally:
            self._running = False

    async def _drive(self, meta: dict[str, Any]) -> None:
        self._generation = meta["generation"]
        await self.ctx.storage.put(META, {**meta, "status": "running"})
        heartbeat = asyncio.ensure_future(self._heartbeat())
        event = JsObject(payload=meta["params"], timestamp=meta["created"], instanceId=meta["id"])
        step = Step(self, self._generation)
        try:
            output = await self.workflow(self.ctx, self.env).run(event, step)
        except _Stopped:
            return
        except Exception as exc:  # noqa: BLE001 - the workflow's own failure is its outcome
            await self._finish("errored", error={"name": type(exc).__name__, "message": str(exc)})
        else:
            try:
                await self._finish("complete", output=output)
            except (TypeError, ValueError) as exc:  # an output storage cannot keep: the run's failure
                await self._finish("errored", error={"name": "DataCloneError", "message": str(exc)})
        finally:
            step.cancel_pending()  # a DAG's steps still running when the run ended
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _finish(self, status: str, **outcome: Any) -> None:
        meta = await self.ctx.storage.get(META)
        if meta is None or meta["generation"] != self._generation or meta["status"] in FINAL:
            return  # restarted or terminated meanwhile: not this run's to finish
        await self.ctx.storage.put(META, {**meta, "status": status, **outcome})
        await self.ctx.storage.delete_alarm()

    async def _heartbeat(self) -> None:
        while True:
            await self.ctx.storage.set_alarm(time.time() * 1000 + HEARTBEAT_S * 1000)
            await self.ctx.storage.sync()
            await asyncio.sleep(HEARTBEAT_S / 2)

    # -- what the steps call ------------------------------------------------------------------
    async def checkpoint(self) -> None:
        """Between steps: stop if terminated or restarted; wait while paused."""
        while True:
            meta = await self.ctx.storage.get(META)
            if meta is None or meta["generation"] != self._generation or meta["status"] in FINAL:
                raise _Stopped()
            if meta["status"] != "paused":
                if meta["status"] in ("waiting", "queued"):  # (queued: resumed while this run waited)
                    await self.ctx.storage.put(META, {**meta, "status": "running"})
                return
            await self.wait_for_signal(HEARTBEAT_S)

    async def record(self, key: str, value: Any) -> None:
        """A step's outcome, durable before the run goes on; not if the run was stopped meanwhile
        (a step of a terminated or restarted run must not land in the next one)."""
        meta = await self.ctx.storage.get(META)
        if meta is None or meta["generation"] != self._generation or meta["status"] in FINAL:
            raise _Stopped()
        await self.ctx.storage.put(key, value)
        await self.ctx.storage.sync()

    async def wait_for_signal(self, timeout_s: float) -> None:
        self._signal.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), timeout_s)

    async def waiting(self, timeout_s: float) -> None:
        """Waiting for an event: the status says so meanwhile."""
        meta = await self.ctx.storage.get(META)
        if meta is not None and meta["status"] == "running":
            await self.ctx.storage.put(META, {**meta, "status": "waiting"})
        await self.wait_for_signal(timeout_s)

    async def take_event(self, event_type: str) -> dict[str, Any] | None:
        queue = await self.ctx.storage.get(f"events:{event_type}") or []
        if not queue:
            return None
        await self.ctx.storage.put(f"events:{event_type}", queue[1:])
        return queue[0]


__all__ = ["NonRetryableError", "WorkflowInstance", "instance_class"]
