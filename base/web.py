"""Request-side helpers for base's handlers: where the call comes from, and rate limits."""
from __future__ import annotations

import ipaddress
from quart import request

from durable import env
from models.errors import ApiError
from models.web import auth, optional_user

__all__ = ["auth", "client_ip", "optional_user", "rate_limit"]


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
