"""Request-side helpers for base's handlers: who is calling, from where, and rate limits."""
from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from quart import g, request

from durable import env
from models.auth import Claims, TokenError, bearer_token, verify_token
from models.errors import ApiError

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _claims() -> Claims:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise ApiError(401, "unauthorized", "Auth failed: missing bearer token")
    try:
        return verify_token(env.JWT_KEY, token)
    except TokenError as exc:
        raise ApiError(401, "unauthorized", f"Auth failed: {exc}") from None


def optional_user() -> Claims | None:
    """The caller's claims if a valid token is sent, else None (a bad token is still a 401)."""
    if not request.headers.get("Authorization"):
        return None
    return _claims()


def auth(role: str | None = None) -> Callable[[F], F]:
    """Require a valid token (and `role`, if given); the claims land in `g.user`."""
    def decorate(handler: F) -> F:
        @wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.user = _claims()
            if role is not None and g.user.role != role:
                raise ApiError(403, "forbidden", f"This route needs the {role} role")
            return await handler(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate


def client_ip() -> str:
    """The caller's address; X-Forwarded-For is believed only from a trusted proxy (the gateway)."""
    peer = request.remote_addr or ""
    trusted = str(env.get("TRUSTED_PROXIES", "127.0.0.1,::1")).split(",")
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and peer in {t.strip() for t in trusted}:
        candidate = forwarded.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            pass
    return peer


def _limit(spec: str) -> tuple[int, float]:
    count, _, window = str(spec).partition("/")
    return int(count), float(window)


async def rate_limit(name: str, spec_var: str) -> None:
    """429 with Retry-After when this client used up `name`'s budget (e.g. LOGIN_RATE_LIMIT="5/900")."""
    limit, window = _limit(env.get(spec_var, "5/900"))
    ns = env.RATE_LIMITER
    result = await ns.get(ns.id_from_name(f"{name}:{client_ip()}")).hit(limit, window)
    if not result["allowed"]:
        raise ApiError(429, "rate_limited", f"Too many {name} attempts; try again in {result['retry_after']} s",
                       headers={"Retry-After": str(result["retry_after"]), "RateLimit-Limit": str(limit),
                                "RateLimit-Remaining": "0", "RateLimit-Reset": str(result["reset"])})
