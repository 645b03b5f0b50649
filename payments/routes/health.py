"""/health: database (with pool statistics), each enabled provider's mode and reachability, and
the idempotency records (how many, and the age of the oldest still in flight)."""
from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint
from quart_schema import document_response

from durable import env
from models.health import Health

from ..providers import registry

bp = Blueprint("health", __name__)


@bp.get("/health")
@document_response(Health, 200)
@document_response(Health, 503)
async def health() -> Any:
    pool = env.MONGO_POOL
    database = await pool.get(pool.id_from_name("global")).health()
    names = list(registry.providers)
    reachable = await asyncio.gather(*(asyncio.wait_for(registry.providers[n].reachable(), 3) for n in names),
                                     return_exceptions=True)
    providers = {n: {"mode": registry.providers[n].mode, "reachable": r is True} for n, r in zip(names, reachable)}
    ledger = env.IDEMPOTENCY_LEDGER
    idempotency = await ledger.get(ledger.id_from_name("global")).stats()
    ok = database["status"] == "connected"
    body = Health.now(env.SERVICE_NAME, env.ENVIRONMENT, "ok" if ok else "degraded").model_dump()
    body.update(database=database, providers=providers, idempotency=idempotency, node=env.node())
    return body, 200 if ok else 503
