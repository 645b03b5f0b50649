"""`env.MY_WORKFLOW`: create, list and control a workflow's instances, each an object of its
namespace named by the instance id (so every process and node reaches the same one)."""
from __future__ import annotations

import re
import uuid
from typing import Any

from ..compat.ffi import JsObject
from ..objects import DurableObjectNamespace, DurableObjectStub

_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")  # Cloudflare's instance ids


class WorkflowError(Exception):
    """Refused by the Workflows API (an id taken or unknown, a malformed one)."""


class WorkflowInstanceHandle:
    def __init__(self, instance_id: str, stub: DurableObjectStub) -> None:
        self.id = instance_id
        self._stub = stub

    async def status(self) -> JsObject:
        """`{status, output?, error?: {name, message}}` with Cloudflare's status names."""
        return JsObject(await self._stub.status())

    async def pause(self) -> None:
        await self._stub.pause()

    async def resume(self) -> None:
        await self._stub.resume()

    async def terminate(self) -> None:
        await self._stub.terminate()

    async def restart(self) -> None:
        await self._stub.restart()

    async def send_event(self, options: Any = None, **keywords: Any) -> None:
        """`{type, payload}`: delivered to a `wait_for_event` of that type, now or later."""
        event = {**(dict(options) if options else {}), **keywords}
        await self._stub.send_event(str(event["type"]), event.get("payload"))

    sendEvent = send_event  # noqa: N815 (JavaScript's name)

    def __repr__(self) -> str:
        return f"<WorkflowInstance {self.id}>"


class Workflow:
    def __init__(self, name: str, namespace: DurableObjectNamespace) -> None:
        self.name = name
        self._namespace = namespace

    async def create(self, options: Any = None, **keywords: Any) -> WorkflowInstanceHandle:
        """A new instance (`{id?, params?}`), queued to run at once."""
        wanted = {**(dict(options) if options else {}), **keywords}
        instance_id = str(wanted.get("id") or uuid.uuid4())
        if not _ID.match(instance_id):
            raise WorkflowError(f"instance.invalid_id: {instance_id!r} (up to 100 letters, digits, _ and -)")
        stub = self._namespace.get_by_name(instance_id)
        if not await stub.create(instance_id, wanted.get("params")):
            raise WorkflowError(f"instance.already_exists: {self.name} already has an instance {instance_id!r}")
        return WorkflowInstanceHandle(instance_id, stub)

    async def create_batch(self, batch: list[Any]) -> list[WorkflowInstanceHandle]:
        return [await self.create(options) for options in batch]

    async def get(self, instance_id: str) -> WorkflowInstanceHandle:
        stub = self._namespace.get_by_name(str(instance_id))
        if not _ID.match(str(instance_id)) or not await stub.exists():
            raise WorkflowError(f"instance.not_found: {self.name} has no instance {instance_id!r}")
        return WorkflowInstanceHandle(str(instance_id), stub)

    createBatch = create_batch  # noqa: N815 (JavaScript's name)

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"
