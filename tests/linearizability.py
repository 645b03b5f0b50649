"""A linearizability checker for a single read/write register (Wing & Gong's search with Lowe's
memoization, as Knossos does it).

An operation is (call time, return time, kind, value): a write of `value`, or a read that
returned `value`. An operation whose outcome the client never learned (a timeout, a 503 after
the call may have run) has return time None: it may take effect at any point after its call,
or never. The history is linearizable if some order of the operations, each placed between its
call and its return, explains every read by the latest write before it.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Op:
    call: float
    ret: float | None  # None: outcome unknown
    kind: str          # "read" or "write"
    value: Any


def linearizable(ops: list[Op], initial: Any = None) -> bool:
    ops = sorted(ops, key=lambda op: op.call)
    n = len(ops)
    done_mask = sum(1 << i for i, op in enumerate(ops) if op.ret is not None)
    seen: set[tuple[int, Any]] = set()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * n + 1000))

    def search(linearized: int, value: Any) -> bool:
        if linearized & done_mask == done_mask:
            return True
        if (linearized, value) in seen:
            return False
        seen.add((linearized, value))
        # an op can go next only if it was called before every pending op's return
        horizon = min((op.ret for i, op in enumerate(ops) if not linearized >> i & 1 and op.ret is not None),
                      default=math.inf)
        for i, op in enumerate(ops):
            if linearized >> i & 1:
                continue
            if op.call > horizon:
                break
            if op.kind == "write":
                if search(linearized | 1 << i, op.value):
                    return True
            elif op.ret is not None and op.value == value:
                if search(linearized | 1 << i, value):
                    return True
        return False

    return search(0, initial)
