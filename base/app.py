"""rest-shop-api: accounts, catalogue and orders.

The worker's entry module: the Quart `app` (fetch handler) and its Durable Object classes.
"""
from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import PyMongoError
from quart import Quart

from durable import env
from durable.mongo import MongoPool
from models.service_auth import install_service_auth, key_problems, require_strong_keys
from models.web import install_error_handlers, install_schema

from .objects.login_guard import LoginGuard
from .objects.order_lock import OrderLock
from .objects.product_stock import ProductStock
from .objects.rate_limiter import RateLimiter
from .objects.shopper_holds import ShopperHolds
from .objects.user_sessions import UserSessions
from .routes import health, orders, products, uploads, users
from durable.mongo import pooled_database as database
from .stores.orders import OrderStore
from .stores.products import ProductStore
from .stores.users import UserStore

__all__ = ["app", "LoginGuard", "MongoPool", "OrderLock", "ProductStock", "RateLimiter", "ShopperHolds", "UserSessions"]

log = logging.getLogger("rest_shop.base")

app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 6 * 1024 * 1024
install_schema(app, "rest-shop-api")
install_error_handlers(app)
install_service_auth(app)
for module in (health, users, products, orders, uploads):
    app.register_blueprint(module.bp)


def startup_problems(worker_env: Any) -> list[str]:
    """What would stop this worker in production (`wrangler serve` lists them all before starting)."""
    return key_problems(worker_env)


@app.before_serving
async def create_indexes() -> None:
    """Idempotent; a database that is down now is reported by /health, not fatal."""
    require_strong_keys()
    try:
        db = await database(env)
        for store in (UserStore(db), ProductStore(db), OrderStore(db)):
            await store.ensure_indexes()
    except PyMongoError as exc:
        log.error("could not create indexes: %s", exc)
