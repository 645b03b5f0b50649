"""rest-shop-api: accounts, catalogue and orders.

The worker's entry module: the Quart `app` (fetch handler) and its Durable Object classes.
"""
from __future__ import annotations

from typing import Any

from quart import Quart

from durable import env
from durable.config import is_development
from durable.mongo_pool import MongoPool, stop_background
from durable.mongo_pool import pooled_database as database
from durable.mongo_pool import prepare as prepare_database
from durable.public_url import public_base_url, url_problems
from web.docs import install_schema
from web.errors import install_error_handlers
from web.health import liveness
from web.service_auth import install_service_auth, key_problems, require_strong_keys

from .accounts.mail import messages as mail_messages
from .accounts.mail import sender as mail_sender
from .accounts.signin import flows as signin_flows
from .accounts.signin import providers as signin_providers
from .objects.attempt_limiter import AttemptLimiter
from .objects.login_guard import LoginGuard
from .objects.order_lock import OrderLock
from .objects.product_stock import ProductStock
from .objects.shopper_holds import ShopperHolds
from .objects.signin_state import SignInState
from .objects.user_sessions import UserSessions
from .routes import health, orders, products, signin, users
from .stores.account_tokens import AccountTokens
from .stores.orders import OrderStore
from .stores.products import ProductStore
from .stores.users import UserStore

__all__ = ["app", "LoginGuard", "MongoPool", "OrderLock", "ProductStock", "AttemptLimiter", "ShopperHolds", "SignInState",
           "UserSessions"]


app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 6 * 1024 * 1024
install_schema(app, "rest-shop-api")
install_error_handlers(app)
install_service_auth(app)
for module in (health, users, signin, products, orders):
    app.register_blueprint(module.bp)
app.register_blueprint(liveness())


def startup_problems(worker_env: Any) -> list[str]:
    """What would stop this worker in production (`wrangler serve` lists them all before starting)."""
    problems = [*key_problems(worker_env), *signin_providers.settings_problems(worker_env),
                *mail_sender.settings_problems(worker_env), *mail_messages.settings_problems(worker_env)]
    return problems + url_problems(worker_env)  # sign-in callbacks and mailed links are built from PUBLIC_BASE_URL


@app.before_serving
async def start() -> None:
    """Keys and sign-in settings are checked (fatal); indexes are made now if the database answers,
    else in the background until it does: the worker serves (and answers its probes) database or not."""
    require_strong_keys()
    if signin_providers.enabled(env) or not is_development(env):
        public_base_url(env)  # refuse to start without it: no provider could send anyone back, no link be mailed
    unsafe = mail_messages.settings_problems(env)
    if unsafe:  # mailed tokens would go somewhere unsafe
        raise mail_sender.MailConfigError(unsafe[0])
    await mail_sender.install(env)
    await signin_flows.install(env)
    await prepare_database(env, "base indexes", _ensure_indexes)


async def _ensure_indexes() -> None:
    db = await database(env)
    for store in (UserStore(db), ProductStore(db), OrderStore(db), AccountTokens(db)):
        await store.ensure_indexes()
    for provider in signin_providers.ISSUERS:
        await UserStore(db).ensure_identity_index(provider)


@app.after_serving
async def stop() -> None:
    await stop_background(env)
    await signin_flows.uninstall(env)
    await mail_sender.uninstall(env)
