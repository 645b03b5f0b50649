"""Hypothesis: random put/delete/list/transaction/reopen sequences agree with a dict model."""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from durable.storage import DurableObjectStorage, StorageEngine

keys = st.text(alphabet="abc:é\U0001f600", min_size=1, max_size=4)
values = st.one_of(st.integers(-2**63, 2**63 - 1), st.text(max_size=5), st.lists(st.integers(0, 9), max_size=3),
                   st.none())


class StorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp())
        self.model: dict[str, object] = {}
        self._open()

    def _open(self) -> None:
        self.engine = StorageEngine(self.dir / "db.sqlite", synchronous="OFF")
        self.storage = DurableObjectStorage(self.engine, "obj")

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    @rule(key=keys, value=values)
    def put(self, key: str, value: object) -> None:
        self.run(self.storage.put(key, value))
        self.model[key] = value

    @rule(entries=st.dictionaries(keys, values, max_size=5))
    def put_many(self, entries: dict[str, object]) -> None:
        self.run(self.storage.put(entries))
        self.model.update(entries)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        existed = self.run(self.storage.delete(key))
        assert existed == (key in self.model)
        self.model.pop(key, None)

    @rule(batch=st.dictionaries(keys, st.one_of(values, st.just("<del>")), max_size=4), commit=st.booleans())
    def transaction(self, batch: dict[str, object], commit: bool) -> None:
        async def body(txn):
            for k, v in batch.items():
                if v == "<del>":
                    await txn.delete(k)
                else:
                    await txn.put(k, v)
            if not commit:
                txn.rollback()
        self.run(self.storage.transaction(body))
        if commit:
            for k, v in batch.items():
                if v == "<del>":
                    self.model.pop(k, None)
                else:
                    self.model[k] = v

    @rule()
    def flush(self) -> None:
        self.run(self.engine.flush())

    @rule()
    def reopen(self) -> None:
        self.run(self.engine.close())
        self._open()

    @precondition(lambda self: bool(self.model))
    @rule()
    def delete_all(self) -> None:
        self.run(self.storage.delete_all())
        self.model.clear()

    @rule(prefix=st.one_of(st.none(), keys), start=st.one_of(st.none(), keys), end=st.one_of(st.none(), keys),
          limit=st.one_of(st.none(), st.integers(1, 5)), reverse=st.booleans())
    def list_matches(self, prefix, start, end, limit, reverse) -> None:
        got = self.run(self.storage.list(prefix=prefix, start=start, end=end, limit=limit, reverse=reverse))
        expected = sorted((k for k in self.model
                           if (prefix is None or k.startswith(prefix)) and (start is None or k >= start)
                           and (end is None or k < end)), reverse=reverse)
        expected = expected if limit is None else expected[:limit]
        assert list(got) == expected
        assert all(got[k] == self.model[k] for k in got)

    @invariant()
    def gets_match(self) -> None:
        for key, value in self.model.items():
            assert self.run(self.storage.get(key)) == value

    def teardown(self) -> None:
        self.run(self.engine.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


StorageMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStorageModel = StorageMachine.TestCase
