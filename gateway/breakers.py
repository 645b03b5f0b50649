"""Circuit breakers, one per upstream: stop waiting on a service that is down.

closed → open after `failures` failures (5xx or no answer) within `window_s` → half-open after
`cooldown_s`, when one probe request goes through → closed if it succeeds, open again if not.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CircuitBreaker:
    failures: int = 5
    window_s: float = 30.0
    cooldown_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    state: str = "closed"
    on_change: Callable[[str], None] | None = None  # told each new state (for /metrics)
    _recent: deque[float] = field(default_factory=deque)
    _opened_at: float = 0.0
    _probe_started: float | None = None

    def admit(self) -> float | None:
        """None if a request may go now, else the seconds to wait (for Retry-After)."""
        now = self.clock()
        if self.state == "open":
            left = self._opened_at + self.cooldown_s - now
            if left > 0:
                return left
            self._become("half_open")
        if self.state == "half_open":
            # one probe at a time; a probe that never reported (cancelled) stops blocking after a cool-down
            if self._probe_started is not None and now - self._probe_started < self.cooldown_s:
                return 1.0
            self._probe_started = now
        return None

    def succeeded(self) -> None:
        if self.state == "half_open":
            self._become("closed")
            self._recent.clear()

    def failed(self) -> None:
        now = self.clock()
        if self.state == "half_open":
            self._open(now)
            return
        self._recent.append(now)
        while self._recent and self._recent[0] < now - self.window_s:
            self._recent.popleft()
        if self.state == "closed" and len(self._recent) >= self.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._become("open")
        self._recent.clear()

    def _become(self, state: str) -> None:
        self.state, self._probe_started = state, None
        if self.on_change is not None:
            self.on_change(state)

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        view: dict[str, Any] = {"state": self.state,
                                "recent_failures": sum(1 for t in self._recent if t >= now - self.window_s)}
        if self.state == "open":
            view["retry_in_s"] = round(max(0.0, self._opened_at + self.cooldown_s - now), 3)
        return view
