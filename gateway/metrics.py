"""The gateway's Prometheus metrics (served with the runtime's at /metrics): the edge cache,
rate-limit refusals and the circuit breakers. Labels are the upstream's name and bounded kinds."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

CACHE = Counter("gateway_cache_requests", "Cacheable reads by outcome (hit, stale: served while refreshed, "
                "miss)", ["outcome"])
RATE_LIMITED = Counter("gateway_rate_limited", "Requests refused with 429 by the rate limits",
                       ["service", "route_class"])
CIRCUIT_STATE = Gauge("gateway_circuit_state", "1 for the state each upstream's circuit breaker is in "
                      "(closed, half_open, open), 0 for the others", ["service", "state"],
                      multiprocess_mode="livemax")
CIRCUIT_OPENED = Counter("gateway_circuit_opened", "Times an upstream's circuit breaker opened", ["service"])

_STATES = ("closed", "half_open", "open")


def circuit_changed(service: str, state: str) -> None:
    for each in _STATES:
        CIRCUIT_STATE.labels(service, each).set(1.0 if each == state else 0.0)
    if state == "open":
        CIRCUIT_OPENED.labels(service).inc()
