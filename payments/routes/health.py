"""/health: database (with pool statistics), each enabled provider's mode and reachability, and
the idempotency records (how many, and the age of the oldest still in flight)."""
from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint
from quart_schema import document_response

from durable import env
from durable.observe.probes import LastKnown
from models.health import Health
from web.health import node_ready, readiness

from ..providers import registry

bp = Blueprint("health", __name__)
WAIT_S = 0.5  # what a probe waits for a check in flight


async def _reachable(name: str) -> bool:
    try:
        return await asyncio.wait_for(registry.providers[name].reachable(), 3) is True
    except Exception:  # noqa: BLE001 (unreachable, refused, slow: all "not reachable")
        return False


@bp.get("/health")
@document_response(Health, 200)
@document_response(Health, 503)
async def health() -> Any:
    """Readiness: the database as the driver last saw it; the providers and the idempotency ledger
    as their last check found them (checked in the background: a slow provider never slows this)."""
    pool = env.MONGO_POOL
    database = await pool.get(pool.id_from_name("global")).health()
    checks: dict[str, LastKnown[Any]] = env.isolate_state("health_checks", dict)
    names = list(registry.providers)
    for name in names:
        if name not in checks:
            checks[name] = LastKnown(lambda n=name: _reachable(n))
    if "idempotency" not in checks:
        ledger = env.IDEMPOTENCY_LEDGER
        checks["idempotency"] = LastKnown(lambda: ledger.get(ledger.id_from_name("global")).stats())
    found = await asyncio.gather(*(checks[name].read(WAIT_S) for name in [*names, "idempotency"]))
    providers = {n: {"mode": registry.providers[n].mode, "reachable": reachable is True, "checkedAgoS": age}
                 for n, (reachable, age) in zip(names, found)}
    idempotency, _ = found[-1]
    node = env.node()
    ok = database["status"] == "connected" and node_ready(node)
    body = Health.now(env.SERVICE_NAME, env.ENVIRONMENT, "ok" if ok else "degraded").model_dump()
    body.update(database=database, providers=providers, idempotency=idempotency, node=node)
    return readiness(body, ok)

