"""rest-shop-api: accounts, catalogue and orders (skeleton: health only, until the base issue)."""
from __future__ import annotations

from typing import Any

from quart import Quart

from durable import env
from models.health import Health
from models.web import install_error_handlers

app = Quart(__name__)
install_error_handlers(app)


@app.get("/health")
async def health() -> Any:
    return Health.now(env.SERVICE_NAME, env.ENVIRONMENT).model_dump()
