"""rest-shop-payments: takes money for orders exactly once, whatever clients, networks and providers do.

The worker's entry module: the Quart `app` and its Durable Object classes.
"""
from __future__ import annotations

import asyncio
from typing import Any

from quart import Quart

from durable import env
from durable.mongo_pool import MongoPool, pooled_database, stop_background
from durable.mongo_pool import prepare as prepare_database
from durable.public_url import public_base_url, url_problems
from web.docs import install_schema
from web.errors import install_error_handlers
from web.health import liveness
from web.service_auth import install_service_auth, key_problems, require_strong_keys

from .objects.idempotency import IdempotencyLedger, PaymentIdempotency, ProviderEvents
from .providers import registry, secret_problems
from .reconcile import sweep_forever
from .routes import health, payments, webhooks
from .stores.payments import PaymentStore

__all__ = ["app", "IdempotencyLedger", "MongoPool", "PaymentIdempotency", "ProviderEvents"]


app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
install_schema(app, "rest-shop-payments")
install_error_handlers(app)
install_service_auth(app)
for module in (health, webhooks, payments):
    app.register_blueprint(module.bp)
app.register_blueprint(liveness())


def startup_problems(worker_env: Any) -> list[str]:
    """What would stop this worker in production (`wrangler serve` lists them all before starting)."""
    return [*key_problems(worker_env), *url_problems(worker_env), *secret_problems(worker_env)]


@app.before_serving
async def start() -> None:
    require_strong_keys()
    public_base_url(env)  # refuse to start without a valid one: callbacks could never reach us
    await registry.start(env)
    await prepare_database(env, "payments indexes", _ensure_indexes)
    # one sweeper per running worker; the task keeps this start-up's env (context is copied)
    env.isolate_state("reconciler", lambda: asyncio.get_running_loop().create_task(sweep_forever(env)))


async def _ensure_indexes() -> None:
    await PaymentStore(await pooled_database(env)).ensure_indexes()


@app.after_serving
async def stop() -> None:
    await stop_background(env)
    for check in env.isolate_state("health_checks", dict).values():
        check.close()
    sweeper = env.isolate_state("reconciler", lambda: None)
    if sweeper is not None:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
    await registry.stop()
