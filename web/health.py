"""Health probes every service shares: liveness (the process answers) and the readiness rule of
a cluster node."""
from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_response

from durable import env
from models.health import Health


def readiness(body: dict[str, Any], ok: bool) -> tuple[dict[str, Any], int] | tuple[dict[str, Any], int, dict[str, str]]:
    """A readiness answer: 200, or 503 with Retry-After. Not ready is this node saying a part is away
    for now (its database, its place in the cluster while it joins or leaves): a gateway must not
    count it as the service failing and open its circuit on every node's traffic."""
    return (body, 200) if ok else (body, 503, {"Retry-After": "1"})


def node_ready(node: dict[str, Any]) -> bool:
    """A cluster node serves its objects only once it has joined; one that runs alone always does."""
    return not node["cluster"] or bool(node["member"])


def liveness() -> Blueprint:
    """`GET /health/live`, every worker's liveness probe: the process answers. It touches nothing
    outside the process (`/health` is readiness: a database that is away makes that one 503,
    never this one, so a process manager does not restart a worker for its database)."""
    bp = Blueprint("liveness", __name__)

    @bp.get("/health/live")
    @document_response(Health, 200)
    async def live() -> Any:
        return Health.now(env.SERVICE_NAME, env.ENVIRONMENT).model_dump()
    return bp
