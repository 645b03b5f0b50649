"""/health: database (with pool statistics) and each enabled provider's mode and reachability."""
from __future__ import annotations

import asyncio
from typing import Any

from quart import Blueprint

from durable import env
from models.health import Health

from ..providers import registry

bp = Blueprint("health", __name__)


@bp.get("/health")
async def health() -> Any:
    pool = env.MONGO_POOL
    database = await pool.get(pool.id_from_name("global")).health()
    names = list(registry.providers)
    reachable = await asyncio.gather(*(asyncio.wait_for(registry.providers[n].reachable(), 3) for n in names),
                                     return_exceptions=True)
    providers = {n: {"mode": registry.providers[n].mode, "reachable": r is True} for n, r in zip(names, reachable)}
    ok = database["status"] == "connected"
    body = Health.now(env.SERVICE_NAME, env.ENVIRONMENT, "ok" if ok else "degraded").model_dump()
    body.update(database=database, providers=providers)
    return body, 200 if ok else 503
