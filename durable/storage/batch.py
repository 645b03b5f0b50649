"""The uncommitted changes of an object, key ranges, and merging changes over a listing."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

UNSET: Any = object()  # an alarm the batch does not touch

Layer = dict[str, "bytes | None"]


@dataclass(slots=True)
class ObjectBatch:
    """Uncommitted changes of one object: an optional wipe, then writes (None = delete)."""

    clear: bool = False
    writes: Layer = field(default_factory=dict)
    alarm: Any = UNSET  # int ms, None to delete, UNSET when untouched


@dataclass(frozen=True, slots=True)
class KeyRange:
    lo: str | None = None
    lo_inclusive: bool = True
    hi: str | None = None  # exclusive

    def __contains__(self, key: str) -> bool:
        if self.lo is not None and (key < self.lo or (key == self.lo and not self.lo_inclusive)):
            return False
        return self.hi is None or key < self.hi


def _prefix_end(prefix: str) -> str | None:
    """Smallest string greater than every string starting with `prefix` (code-point order)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000  # skip surrogates: not encodable in UTF-8 keys
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def key_range(prefix: str | None = None, start: str | None = None,
              start_after: str | None = None, end: str | None = None) -> KeyRange:
    if start is not None and start_after is not None:
        raise ValueError("list() takes start or start_after, not both")
    lo, inclusive = (start, True) if start_after is None else (start_after, False)
    hi = end
    if prefix:
        if lo is None or lo < prefix:
            lo, inclusive = prefix, True
        pend = _prefix_end(prefix)
        if pend is not None and (hi is None or pend < hi):
            hi = pend
    return KeyRange(lo, inclusive, hi)


def merge_listing(base: list[tuple[str, bytes]], layers: Iterable[ObjectBatch | None],
                  rng: KeyRange, reverse: bool, limit: int | None) -> list[tuple[str, bytes]]:
    """Apply uncommitted layers (oldest first) over a committed listing, in key order."""
    merged = dict(base)
    for layer in layers:
        if layer is None:
            continue
        if layer.clear:
            merged.clear()
        for k, v in layer.writes.items():
            if k not in rng:
                continue
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
    items = sorted(merged.items(), reverse=reverse)
    return items if limit is None else items[:limit]


