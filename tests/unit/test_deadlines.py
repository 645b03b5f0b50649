"""A request's budget, carried into every call it makes (`durable.deadline`), and a database command
bounded by it."""
from __future__ import annotations

import asyncio
import time

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from durable import deadline
from web.errors import is_database_failure


def test_a_caller_may_shorten_a_budget_never_lengthen_it() -> None:
    assert deadline.budget_from({}, 30) == 30
    assert deadline.budget_from({deadline.DEADLINE_HEADER: "2500"}, 30) == 2.5
    assert deadline.budget_from({deadline.DEADLINE_HEADER: "90000"}, 30) == 30
    assert deadline.budget_from({deadline.DEADLINE_HEADER: "0"}, 30) == deadline.MIN_BUDGET_S
    assert deadline.budget_from({deadline.DEADLINE_HEADER: "soon"}, 30) == 30


async def test_an_inner_block_cannot_outlive_the_request_and_its_calls_say_what_is_left() -> None:
    assert deadline.remaining(7.0) == 7.0 and deadline.outgoing() == {}
    with deadline.within(1.0):
        with deadline.within(60.0):
            assert deadline.remaining() <= 1.0
            left_ms = int(deadline.outgoing()[deadline.DEADLINE_HEADER])
            assert 500 < left_ms <= 900  # less a margin for the answer to come back
        task_left = await asyncio.get_running_loop().create_task(asyncio.sleep(0, deadline.remaining()))
        assert 0 < task_left <= 1.0  # it follows the request into the tasks it starts
    assert deadline.remaining(7.0) == 7.0


async def test_a_database_command_is_bounded_by_the_request_s_deadline(mongo_uri: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        coll = client["deadline_test"]["slow"]
        await coll.replace_one({"_id": 1}, {"x": 1}, upsert=True)
        async with client.start_session() as holder:  # a transaction holds the document's lock ...
            await holder.start_transaction()
            await coll.update_one({"_id": 1}, {"$inc": {"x": 1}}, session=holder)
            started = time.monotonic()
            with pytest.raises(PyMongoError) as raised:  # ... this write waits, as long as the request may
                with deadline.within(0.3), deadline.database(10):
                    await asyncio.wait_for(coll.update_one({"_id": 1}, {"$inc": {"x": 10}}), 5)
            waited = time.monotonic() - started
            await holder.abort_transaction()
        assert raised.value.timeout and waited < 2.5
        assert is_database_failure(raised.value)  # which the services answer as a 503
    finally:
        await client.close()
