"""/health: the service and its database, with the MongoPool's statistics; 503 when the DB is down."""
from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart_schema import document_response

from durable import env
from models.health import Health
from web.health import node_ready, readiness

bp = Blueprint("health", __name__)


@bp.get("/health")
@document_response(Health, 200)
@document_response(Health, 503)
async def health() -> Any:
    pool = env.MONGO_POOL
    database = await pool.get(pool.id_from_name("global")).health()
    node = env.node()
    ok = database["status"] == "connected" and node_ready(node)
    body = Health.now(env.SERVICE_NAME, env.ENVIRONMENT, "ok" if ok else "degraded").model_dump()
    body["database"] = database
    body["node"] = node
    return readiness(body, ok)

