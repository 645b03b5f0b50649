"""rest-shop-gateway: the edge. Routes to the base and payments workers through service bindings.

`app` sends everything but the gateway's own `/health` down the lean forwarding path in
`proxy.py` (rate limits, cache, breakers, signatures); `/health` is a small Quart app. It does no
user authentication of its own: each service validates tokens itself.
"""
from __future__ import annotations

from typing import Any

from quart import Quart

from durable import env
from durable.observe.metrics import note_route_templates
from models.health import Health
from web.errors import install_error_handlers
from web.health import liveness
from web.service_auth import key_problems, require_strong_keys

from . import proxy
from .edge import edge
from .health import aggregate
from .limits import parse_limits
from .objects.rate_limiter import RateLimiter

__all__ = ["app", "RateLimiter"]

OWN_PATHS = frozenset({"/health", "/health/live"})

site = Quart(__name__)
note_route_templates(site)  # the runtime names the routes of the worker's app; this one is inside it
install_error_handlers(site)
site.register_blueprint(liveness())


@site.get("/health")
async def health() -> Any:
    """Readiness: the services as last found, the breakers, this node."""
    body, status = await aggregate(env, edge(env))
    return {**Health.now(env.SERVICE_NAME, env.ENVIRONMENT, body["status"]).model_dump(), **body}, status


class Gateway:
    """The worker's fetch handler: its own pages through Quart, the rest straight to the proxy."""

    def __init__(self, own: Quart) -> None:
        self.own = own

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OWN_PATHS:
            await proxy.handle(scope, receive, send)
        elif scope["type"] == "websocket":
            await proxy.handle_websocket(scope, receive, send)
        else:
            await self.own(scope, receive, send)

    async def startup(self) -> None:
        require_strong_keys(KEYS)
        parse_limits(str(env.get("RATE_LIMITS", "")))  # a typo in the limits stops the start, not a request
        await self.own.startup()

    async def shutdown(self) -> None:
        for probe in edge(env).upstream_health.values():
            probe.close()
        await edge(env).cache.close()
        await edge(env).timeouts.close()
        await self.own.shutdown()


app = Gateway(site)
KEYS = ("SERVICE_AUTH_KEY", "JWT_KEY")  # signs forwards; verifies tokens before they key a rate limit


def startup_problems(worker_env: Any) -> list[str]:
    """What would stop this worker in production (`wrangler serve` lists them all before starting)."""
    problems = key_problems(worker_env, KEYS)
    try:
        parse_limits(str(worker_env.get("RATE_LIMITS", "")))
    except ValueError as exc:
        problems.append(str(exc))
    return problems
