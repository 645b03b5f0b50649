"""The gateway's /health: every upstream's own /health as last found (probed in the background,
short timeout, in parallel), the circuit breakers, and this node (in a cluster: every member it
sees, with its address); ok only when every service is."""
from __future__ import annotations

import asyncio
import time
from typing import Any

from durable import Request
from durable.observe.probes import LastKnown
from web.health import node_ready

from .edge import Edge
from .routing import UPSTREAMS


async def probe(binding: Any, timeout_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        reply = await asyncio.wait_for(binding.fetch(Request("http://upstream/health")), timeout_s)
        body = await reply.json()
        report = body if isinstance(body, dict) else {}
        if reply.status != 200 and report.get("status") in (None, "ok"):
            report = {**report, "status": "down"}
    except asyncio.TimeoutError:
        report = {"status": "down", "error": f"no answer within {timeout_s:g} s"}
    except Exception as exc:  # an unreachable or broken upstream is a finding, not our failure
        report = {"status": "down", "error": type(exc).__name__}
    return {**report, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


async def aggregate(env: Any, edge: Edge) -> tuple[dict[str, Any], int]:
    """Each service's state as its last probe found it (a probe runs in the background, and this
    waits at most HEALTH_WAIT_S for one in flight): the answer never waits on a slow service."""
    timeout_s = float(env.get("HEALTH_PROBE_TIMEOUT_S", 2))
    wait_s = float(env.get("HEALTH_WAIT_S", 0.5))
    for name, binding in UPSTREAMS.items():
        if name not in edge.upstream_health:
            edge.upstream_health[name] = LastKnown(lambda b=getattr(env, binding): probe(b, timeout_s))
    found = await asyncio.gather(*(edge.upstream_health[name].read(wait_s) for name in UPSTREAMS))
    reports = [LastKnown.reported(value, age, {"status": "down", "error": f"no answer yet (waited {wait_s:g} s)"})
               for value, age in found]
    services = dict(zip(UPSTREAMS, reports))
    states = [r.get("status") for r in reports]
    status = "ok" if all(s == "ok" for s in states) else ("down" if all(s == "down" for s in states) else "degraded")
    node = env.node()
    if status == "ok" and not node_ready(node):  # its own objects (rate limits) are away
        status = "degraded"
    circuits = {name: b.snapshot() for name, b in edge.breakers.items()}
    return {"status": status, "services": services, "circuits": circuits, "cache": edge.cache.snapshot(),
            "node": node}, 200 if status == "ok" else 503
