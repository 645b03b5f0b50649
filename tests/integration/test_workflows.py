"""Workflows on the runtime, in process: a DAG's steps once each, retries and a non-retryable
failure, events sent before or after they are awaited, sleeps, and an instance paused, resumed,
terminated and restarted; Cloudflare's status names and error shape."""
from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from durable import config as wconfig
from durable.runtime import Runtime
from durable.workflows.binding import WorkflowError
from tests.conftest import FIXTURES
from tests.polling import until


@pytest.fixture
async def flows(tmp_path: Path) -> AsyncIterator[Any]:
    runtime = Runtime([wconfig.load(FIXTURES / "cf_workflows" / "wrangler.jsonc")], persist_to=tmp_path / "state")
    await runtime.start()
    worker = runtime.workers["cf-workflows"]
    worker.env.RAN = worker.module.RAN  # what the steps counted, beside the binding
    yield worker.env
    await runtime.close()


async def settled(instance: Any, *statuses: str) -> dict[str, Any]:
    async def reached() -> Any:
        status = await instance.status()
        return status if status["status"] in statuses else None
    return await until(reached, 20, f"{instance.id} to be {' or '.join(statuses)}")


async def test_a_dag_runs_each_step_once_and_hands_results_on(flows: Any) -> None:
    instance = await flows.FLOWS.create(params={"kind": "dag"})
    done = await settled(instance, "complete")
    assert done == {"status": "complete", "output": {"sum": 3, "a again": 1}}
    assert flows.RAN[(instance.id, "a")] == 1 and flows.RAN[(instance.id, "b")] == 1


async def test_retries_then_success_and_a_non_retryable_error(flows: Any) -> None:
    flaky = await flows.FLOWS.create(params={"kind": "retry", "fail": 3})
    assert await settled(flaky, "complete") == {"status": "complete", "output": 3}
    exhausted = await flows.FLOWS.create(params={"kind": "retry", "fail": 10})  # limit 3: 4 attempts
    status = await settled(exhausted, "errored")
    assert status["error"] == {"name": "ValueError", "message": "attempt 4 failed"}
    assert flows.RAN[(exhausted.id, "flaky")] == 4
    fatal = await flows.FLOWS.create(params={"kind": "fatal"})
    status = await settled(fatal, "errored")
    assert status["error"] == {"name": "NonRetryableError", "message": "bad input"}
    assert flows.RAN[(fatal.id, "boom")] == 1  # not retried


async def test_events_before_and_after_they_are_awaited(flows: Any) -> None:
    early = await flows.FLOWS.create(id="early-bird", params={"kind": "event"})
    await early.send_event({"type": "approved", "payload": {"by": "ann"}})  # buffered until awaited
    assert (await settled(early, "complete"))["output"] == {"by": "ann"}
    late = await flows.FLOWS.create(params={"kind": "event"})
    await settled(late, "waiting")
    await (await flows.FLOWS.get(late.id)).sendEvent(type="approved", payload="yes")
    assert (await settled(late, "complete"))["output"] == "yes"


async def test_sleep_and_the_binding_s_refusals(flows: Any) -> None:
    napper = await flows.FLOWS.create(id="napper", params={"kind": "sleep", "ms": 300})
    assert (await napper.status())["status"] in ("queued", "running")
    assert (await settled(napper, "complete"))["output"] == "woke"
    with pytest.raises(WorkflowError, match="already_exists"):
        await flows.FLOWS.create(id="napper", params={"kind": "sleep", "ms": 1})
    with pytest.raises(WorkflowError, match="not_found"):
        await flows.FLOWS.get("nobody")
    with pytest.raises(WorkflowError, match="invalid_id"):
        await flows.FLOWS.create(id="no spaces", params={})
    batch = await flows.FLOWS.create_batch([{"params": {"kind": "dag"}}, {"params": {"kind": "dag"}}])
    assert [(await settled(i, "complete"))["output"]["sum"] for i in batch] == [3, 3]


async def test_pause_resume_terminate_and_restart(flows: Any) -> None:
    paused = await flows.FLOWS.create(params={"kind": "gated"})
    await settled(paused, "waiting")
    await paused.pause()
    await paused.send_event(type="go")
    assert (await paused.status())["status"] == "paused" and flows.RAN[(paused.id, "second")] == 0
    await paused.resume()
    assert (await settled(paused, "complete"))["output"] == "done"

    stopped = await flows.FLOWS.create(params={"kind": "gated"})
    await settled(stopped, "waiting")
    await stopped.terminate()
    await stopped.send_event(type="go")
    assert (await settled(stopped, "terminated")) == {"status": "terminated"}
    assert flows.RAN[(stopped.id, "second")] == 0

    again = await flows.FLOWS.create(params={"kind": "gated"})
    await settled(again, "waiting")
    await again.restart()  # from the beginning: its first step runs again
    await settled(again, "waiting")
    await again.send_event(type="go")
    assert (await settled(again, "complete"))["output"] == "done"
    assert flows.RAN[(again.id, "first")] == 2 and flows.RAN[(again.id, "second")] == 1


async def test_restart_of_a_long_run_and_an_output_storage_cannot_keep(flows: Any) -> None:
    many = await flows.FLOWS.create(params={"kind": "many", "steps": 140})
    await settled(many, "waiting")
    await many.restart()  # 140 stored steps and more: gone in one go
    await settled(many, "waiting")
    await many.send_event(type="go")
    assert (await settled(many, "complete"))["output"] == 140
    odd = await flows.FLOWS.create(params={"kind": "unstorable"})
    status = await settled(odd, "errored")  # not "running" forever
    assert status["error"]["name"] == "DataCloneError"
