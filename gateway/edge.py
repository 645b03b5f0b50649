"""The gateway's in-memory state, one per running gateway: a circuit breaker per upstream, the
response cache, the forwards' timeouts and the rate-limit allowances, configured from vars."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durable.observe.probes import LastKnown

from . import metrics
from .allowances import TokenAllowances
from .breakers import CircuitBreaker
from .cache import ResponseCache
from .routing import UPSTREAMS
from .timeouts import ForwardTimeouts


@dataclass
class Edge:
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    cache: ResponseCache = field(default_factory=ResponseCache)
    timeouts: ForwardTimeouts = field(default_factory=lambda: ForwardTimeouts(30.0))  # of relayed forwards
    allowances: TokenAllowances = field(default_factory=TokenAllowances)  # rate-limit tokens held by this node
    # the vars every request reads, read once (they do not change while the worker runs)
    allowed_origins: str = ""
    rate_limits: str = ""
    trusted_proxies: frozenset[str] = frozenset()
    jwt_key: str | None = field(default=None, repr=False)  # a secret: verifies the tokens that key limits
    upstream_health: dict[str, LastKnown[dict[str, Any]]] = field(default_factory=dict)  # for /health


def build_edge(env: Any) -> Edge:
    def breaker(service: str) -> CircuitBreaker:
        metrics.circuit_changed(service, "closed")
        return CircuitBreaker(failures=int(env.get("BREAKER_FAILURES", 5)),
                              window_s=float(env.get("BREAKER_WINDOW_S", 30)),
                              cooldown_s=float(env.get("BREAKER_COOLDOWN_S", 10)),
                              on_change=lambda state: metrics.circuit_changed(service, state))
    cache = ResponseCache(max_bytes=int(env.get("CACHE_MAX_BYTES", 32 * 1024 * 1024)),
                          max_age_s=float(env.get("CACHE_MAX_AGE_S", 30)),
                          stale_s=float(env.get("CACHE_STALE_S", 60)))
    return Edge(breakers={name: breaker(name) for name in UPSTREAMS}, cache=cache,
                timeouts=ForwardTimeouts(float(env.get("UPSTREAM_TIMEOUT_S", 30))),
                allowed_origins=str(env.get("ALLOWED_ORIGINS", "")), rate_limits=str(env.get("RATE_LIMITS", "")),
                jwt_key=env.get("JWT_KEY"),
                trusted_proxies=frozenset(t.strip() for t in str(env.get("TRUSTED_PROXIES", "")).split(",")
                                          if t.strip()))


def edge(env: Any) -> Edge:
    return env.isolate_state("edge", lambda: build_edge(env))
