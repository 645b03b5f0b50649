"""Request-side helpers for base's handlers: rate limits, the token a sign-in answers with (and the
shared auth helpers re-exported)."""
from __future__ import annotations

import asyncio
from typing import Any

from quart import websocket

from durable import WebSocket, env
from durable.compat.websocket import forward
from models.auth import issue_token
from models.errors import ApiError
from models.web import (auth, client_ip, documents_errors, documents_idempotency_key, idempotency_key,
                        optional_user, user_sessions)

__all__ = ["auth", "client_ip", "documents_errors", "documents_idempotency_key", "idempotency_key", "optional_user",
           "join_websocket", "rate_limit", "token_for"]


def _limit(spec: str) -> tuple[int, float]:
    count, _, window = str(spec).partition("/")
    return int(count), float(window)


async def rate_limit(name: str, spec_var: str, key: str | None = None) -> None:
    """429 with Retry-After when this client (or `key`: an account, an address) used up `name`'s
    budget (e.g. LOGIN_RATE_LIMIT="5/900")."""
    limit, window = _limit(env.get(spec_var, "5/900"))
    result = await env.RATE_LIMITER.get_by_name(f"{name}:{key or client_ip()}").hit(limit, window)
    if not result["allowed"]:
        raise ApiError(429, "rate_limited", f"Too many {name} attempts; try again in {result['retry_after']} s",
                       headers={"Retry-After": str(result["retry_after"]), "RateLimit-Limit": str(limit),
                                "RateLimit-Remaining": "0", "RateLimit-Reset": str(result["reset"])})


async def token_for(doc: dict[str, Any]) -> str:
    """Our JWT for this account (password login or a provider's sign-in), its session recorded."""
    user_id, gen = str(doc["_id"]), int(doc.get("tokenGen", 0))
    await user_sessions(user_id).logged_in(user_id, doc["role"], gen)
    return issue_token(env.JWT_KEY, email=doc["email"], user_id=user_id, role=doc["role"], gen=gen)


async def join_websocket(peer: WebSocket) -> None:
    """Join the accepted Quart WebSocket to `peer` (a pair's client end) until either side closes."""
    async def incoming() -> None:
        while True:
            peer.send(await websocket.receive())

    tasks = [asyncio.ensure_future(forward(peer, websocket.send, websocket.close)), asyncio.ensure_future(incoming())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        peer.close(1000, "")  # the client went away (or we closed): the far end hears it
