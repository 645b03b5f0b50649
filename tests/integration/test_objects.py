"""Durable Object semantics through the real runtime: instances, gates, resets, RPC, alarms."""
from __future__ import annotations

import asyncio

import pytest

from durable import DataCloneError, Response, RpcError
from durable.runtime import Runtime
from tests.polling import eventually as wait_for


def counter_ns(rt: Runtime):
    return rt.workers["fx-counter"].env.COUNTER


async def test_one_live_instance_per_id_under_concurrent_first_calls(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stubs = [ns.get(ns.id_from_name("solo")) for _ in range(200)]
    identities = await asyncio.gather(*(s.identity() for s in stubs))
    assert len({i["token"] for i in identities}) == 1
    assert runtime.workers["fx-counter"].hosts["Counter"].live_count == 1


async def test_storage_only_read_modify_write_is_exact_under_1000_concurrent_rpcs(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("hot"))
    results = await asyncio.gather(*(stub.increment(1) for _ in range(1000)))
    assert sorted(results) == list(range(1, 1001))
    assert await stub.count() == 1000


async def test_network_await_between_read_and_write_races(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("racy"))
    await asyncio.gather(*(stub.racy_increment() for _ in range(50)))
    assert await stub.count() < 50  # the documented lost-update race


@pytest.mark.parametrize("method", ["blocked_increment", "txn_increment"])
async def test_block_concurrency_while_and_transaction_prevent_the_race(runtime: Runtime, method: str) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name(f"safe-{method}"))
    results = await asyncio.gather(*(getattr(stub, method)() for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await stub.count() == 50


async def test_constructor_blocker_holds_events_until_loaded(runtime: Runtime) -> None:
    ns = runtime.workers["fx-counter"].env.LOADER
    stub = ns.get(ns.id_from_name("boot"))
    booted = await asyncio.gather(*(stub.booted() for _ in range(20)))
    assert booted == [1] * 20


async def test_uncaught_exception_resets_memory_but_keeps_committed_storage(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("reset"))
    await stub.increment(5)
    before = await stub.identity()
    assert before["calls"] == 1
    with pytest.raises(RuntimeError, match="boom after write"):
        await stub.write_then_fail()
    after = await stub.identity()
    assert after["token"] != before["token"] and after["calls"] == 0
    assert await stub.count() == 5
    host = runtime.workers["fx-counter"].hosts["Counter"]
    assert await host.engine.flush() is None and host.engine.read(str(stub.id), "written-before-failure") is not None


async def test_rpc_errors_keep_type_and_message(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("errors"))
    with pytest.raises(ValueError, match="bad value 42"):
        await stub.fail("value")
    out_of_stock = runtime.workers["fx-counter"].module.OutOfStock  # registered with register_error
    with pytest.raises(out_of_stock, match="only 3 left"):
        await stub.fail("custom")
    with pytest.raises(TypeError, match="no RPC method 'nope'"):
        await stub.nope()
    with pytest.raises(TypeError, match="no RPC method 'alarm'"):
        await stub.alarm()


async def test_serialization_errors_are_clear(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("serial"))
    with pytest.raises(DataCloneError, match=r"arguments of Counter\.echo\(\) could not be serialized"):
        await stub.echo(object())
    with pytest.raises(DataCloneError, match=r"result of Counter\.unserializable\(\)"):
        await stub.unserializable()
    value = {"nested": [1, 2.5, "x", None, True, {"deep": b"bytes"}], "id": ns.id_from_name("x")}
    echoed = await stub.echo(value)
    assert echoed == value and echoed["id"].name == "x"


async def test_in_process_rpc_copies_results_and_refuses_what_could_not_cross(runtime: Runtime) -> None:
    """Scalar arguments skip the copy in one process; the rest must behave as across processes."""
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("copies"))
    mine = await stub.memory("a")
    mine.append("changed by the caller")
    assert await stub.memory() == ["a"]
    with pytest.raises(DataCloneError, match=r"arguments of Counter\.echo\(\)"):
        await stub.echo(2**70)  # BSON has no integer that large: refused here as it would be remotely
    assert await stub.echo(2**62) == 2**62 and await stub.echo(b"raw") == b"raw"
    record = await stub.profile(a=1, b="x")  # a flat record: copied without a serialization round trip
    record["a"] = 99
    assert await stub.profile() == {"a": 1, "b": "x"}


async def test_stub_fetch_reaches_the_objects_fetch_handler(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    stub = ns.get(ns.id_from_name("fetchy"))
    await stub.increment(3)
    response = await stub.fetch("https://do/some/path", method="POST")
    assert isinstance(response, Response)
    assert await response.json() == {"method": "POST", "path": "/some/path", "n": 3}


async def test_ids_are_deterministic_per_namespace_and_validated(runtime: Runtime) -> None:
    ns = counter_ns(runtime)
    other = runtime.workers["fx-counter"].env.ALARMED
    assert ns.id_from_name("a") == ns.id_from_name("a")
    assert ns.id_from_name("a") != other.id_from_name("a")
    assert ns.id_from_string(str(ns.id_from_name("a"))) == ns.id_from_name("a")
    assert ns.new_unique_id() != ns.new_unique_id()
    unique = ns.new_unique_id()
    assert ns.id_from_string(str(unique).upper()) == unique
    with pytest.raises(ValueError, match="Invalid Durable Object ID"):
        ns.id_from_string("not-an-id")
    for foreign in (other.id_from_name("a"), other.new_unique_id()):  # another namespace's ids are refused
        with pytest.raises(ValueError, match="not valid for this namespace"):
            ns.id_from_string(str(foreign))
    mistyped = str(ns.id_from_name("a"))
    with pytest.raises(ValueError, match="not valid for this namespace"):
        ns.id_from_string(mistyped[:10] + ("0" if mistyped[10] != "0" else "1") + mistyped[11:])


async def test_objects_stored_before_ids_carried_a_namespace_mark_are_found_under_their_new_ids(
        tmp_path) -> None:
    """A state written by the old id scheme (a bare 64-hex HMAC of the name) is converted once at
    start: the data and the alarm come back under the new id."""
    import hmac
    import sqlite3

    from durable import codec, config as wconfig, ids
    from tests.conftest import FIXTURES

    key = ids.namespace_key("cf-objects", "Notes")
    old = hmac.digest(key, b"room", "sha256").hex()
    store = tmp_path / "state" / "v3" / "do" / "cf-objects-Notes" / "db.sqlite"
    store.parent.mkdir(parents=True)
    db = sqlite3.connect(store)
    db.executescript("CREATE TABLE kv (object_id TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
                     "PRIMARY KEY (object_id, key)) WITHOUT ROWID; CREATE TABLE alarms (object_id TEXT PRIMARY KEY, "
                     "scheduled_ms INTEGER NOT NULL) WITHOUT ROWID;")
    db.execute("INSERT INTO kv VALUES (?, 'notes', ?)", (old, codec.encode('["kept"]')))
    db.execute("INSERT INTO alarms VALUES (?, 4102444800000)", (old,))
    db.commit()
    db.close()
    for _ in range(2):  # the second start finds nothing to convert and changes nothing
        rt = Runtime([wconfig.load(FIXTURES / "cf_objects" / "wrangler.jsonc")], persist_to=tmp_path / "state")
        await rt.start()
        try:
            notes = rt.workers["cf-objects"].env.NOTES
            stub = notes.getByName("room")
            assert str(stub.id) != old and str(stub.id)[:56] == old[:56]
            assert await stub.read() == ["kept"] and await stub.alarm_at() == 4102444800000
        finally:
            await rt.close()


async def test_alarm_fires_at_its_time(runtime: Runtime) -> None:
    ns = runtime.workers["fx-counter"].env.ALARMED
    stub = ns.get(ns.id_from_name("once"))
    await stub.schedule(50)
    status = await wait_for(lambda: _ran(stub))
    assert status["runs"] == 1 and status["retries"] == [0] and status["alarm"] is None


async def test_failing_alarm_is_retried_with_backoff_then_succeeds(runtime: Runtime) -> None:
    ns = runtime.workers["fx-counter"].env.ALARMED
    stub = ns.get(ns.id_from_name("flaky"))
    await stub.schedule(10, failures=3)
    status = await wait_for(lambda: _ran(stub))
    assert status["runs"] == 1 and status["retries"] == [0, 1, 2, 3]


async def test_alarm_gives_up_after_six_retries(runtime: Runtime) -> None:
    ns = runtime.workers["fx-counter"].env.ALARMED
    stub = ns.get(ns.id_from_name("hopeless"))
    await stub.schedule(10, failures=100)

    async def gave_up():
        status = await stub.status()
        return status if status["alarm"] is None and len(status["retries"]) == 7 else None
    status = await wait_for(gave_up)
    assert status and status["runs"] == 0 and status["retries"] == [0, 1, 2, 3, 4, 5, 6]


async def test_rpc_from_another_worker_in_process(runtime: Runtime) -> None:
    peer = runtime.workers["fx-peer"]
    ns = peer.env.REMOTE_COUNTER
    stub = ns.get(ns.id_from_name("shared"))
    await stub.increment(2)
    local = counter_ns(runtime)
    assert await local.get(local.id_from_name("shared")).count() == 2


async def _ran(stub):
    status = await stub.status()
    return status if status["runs"] else None


def test_rpc_error_class_for_unknown_types() -> None:
    from durable.errors import error_from_wire
    exc = error_from_wire({"type": "PaymentDeclined", "message": "card declined"})
    assert isinstance(exc, RpcError) and exc.remote_type == "PaymentDeclined" and str(exc) == "card declined"


async def test_get_alarm_inside_alarm_is_none_unless_set_again(runtime: Runtime) -> None:
    ns = runtime.workers["fx-counter"].env.ALARMED
    stub = ns.get_by_name("spent")
    await stub.schedule(10, rearm_ms=60_000)
    status = await wait_for(lambda: _ran(stub))
    (first_run,) = status["alarm_seen"]
    assert first_run[0] is None and isinstance(first_run[1], int)  # spent, then the new one
    assert status["alarm"] == first_run[1]  # the re-set alarm stays armed after the run


async def test_errors_from_an_object_say_they_are_remote_and_whether_to_retry(runtime: Runtime) -> None:
    from durable import ObjectUnavailable
    from durable.errors import error_from_wire, error_to_wire
    stub = runtime.workers["fx-counter"].env.COUNTER.get_by_name("errors-attrs")
    with pytest.raises(ValueError) as caught:
        await stub.fail("value")
    assert caught.value.remote is True and caught.value.retryable is False and caught.value.overloaded is False
    moved = error_from_wire(error_to_wire(ObjectUnavailable("node gone")))
    assert isinstance(moved, ObjectUnavailable) and moved.retryable is True


async def test_a_blocker_that_never_ends_resets_the_object(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    from durable.objects import DurableObjectState
    monkeypatch.setattr(DurableObjectState, "block_timeout_s", 0.2)
    stub = runtime.workers["fx-counter"].env.STUCK.get_by_name("stuck")
    first = asyncio.ensure_future(stub.identity())  # waits at the gate behind the stuck blocker
    with pytest.raises(Exception):
        await asyncio.wait_for(first, 5)  # the blocker times out: the object resets, the call fails
    module = runtime.workers["fx-counter"].module
    monkeypatch.setattr(module.Stuck, "unstick", True, raising=False)
    assert isinstance(await asyncio.wait_for(stub.identity(), 5), str)  # a fresh instance answers


async def test_get_by_name_is_get_of_id_from_name(runtime: Runtime) -> None:
    ns = runtime.workers["fx-counter"].env.COUNTER
    by_name, by_id = ns.get_by_name("named"), ns.get(ns.id_from_name("named"))
    assert by_name.id == by_id.id and by_name.name == "named"
    assert (await by_name.identity())["token"] == (await by_id.identity())["token"]  # one live instance


async def test_wait_until_work_finishes_after_the_reply(runtime: Runtime) -> None:
    stub = runtime.workers["fx-counter"].env.COUNTER.get_by_name("later")
    assert await stub.increment_later(5) == "accepted"
    assert await wait_for(lambda: _count_is(stub, 5))


async def _count_is(stub, value: int) -> bool:
    return await stub.count() == value


async def test_a_failed_commit_fails_the_call_and_loses_nothing_committed(runtime: Runtime,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3
    stub = runtime.workers["fx-counter"].env.COUNTER.get_by_name("disk-full")
    assert await stub.increment(1) == 1
    engine = runtime.workers["fx-counter"].hosts["Counter"].engine

    def disk_full(batch):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(engine, "_commit_sync", disk_full)
    with pytest.raises(Exception) as caught:
        await stub.increment(1)  # the output gate: no answer for a write that did not land
    assert "disk is full" in str(caught.value)
    monkeypatch.undo()
    assert await stub.count() == 1  # the instance forgot the write that never landed
    assert await stub.increment(1) == 2


async def test_allow_unconfirmed_replies_before_the_write_is_durable(runtime: Runtime,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The output gate holds a reply until its writes are durable, except for allowUnconfirmed."""
    stub = runtime.workers["fx-counter"].env.COUNTER.get_by_name("unconfirmed")
    await stub.note(0)
    engine = runtime.workers["fx-counter"].hosts["Counter"].engine
    release, started = asyncio.Event(), asyncio.Event()
    real_commit = engine._commit

    async def held_commit(batch):
        started.set()
        await release.wait()
        return await real_commit(batch)

    monkeypatch.setattr(engine, "_commit", held_commit)
    try:
        assert await asyncio.wait_for(stub.note(2, unconfirmed=True), 10) == 2  # answered without the disk
        await started.wait()  # ...whose commit is now running, and held
        confirmed = asyncio.ensure_future(stub.note(1))
        await asyncio.sleep(0)
        assert not confirmed.done()  # a confirmed write's reply waits for the disk
    finally:
        release.set()
    assert await asyncio.wait_for(confirmed, 10) == 1


async def test_a_pending_alarm_does_not_keep_the_request_that_set_it_alive(runtime: Runtime) -> None:
    """A timer runs its callback in a context; an alarm's must not be the context of the request
    that set it (its trace, its Quart request, everything they hold), or every armed alarm keeps
    one whole request in memory until it fires (30 minutes for an unpaid order)."""
    import contextvars
    import gc
    import weakref

    class Held:
        pass

    request_state: contextvars.ContextVar[Held] = contextvars.ContextVar("request_state")
    held = Held()
    watch = weakref.ref(held)
    ns = runtime.workers["fx-counter"].env.ALARMED

    async def a_request() -> None:
        request_state.set(held)
        await ns.get_by_name("far-away").schedule(3_600_000)

    request = asyncio.get_running_loop().create_task(a_request(), context=contextvars.Context())
    await request
    del request, held
    await asyncio.sleep(0)  # the loop lets go of the finished task
    gc.collect()
    assert watch() is None  # nothing but the finished request referred to it
    assert (await ns.get_by_name("far-away").status())["alarm"] is not None  # and the alarm is armed
