"""Who is calling: a bearer token (or a WebSocket's `access_token`) whose session still speaks for
its user, checked with the user's UserSessions object; `auth()` guards a route with it."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from quart import g, has_websocket_context, request, websocket

from durable import env
from models.auth import Claims

from .docs import F, documents_errors
from .errors import ApiError
from .tokens import TokenError, bearer_token, verify_token


def _claims() -> Claims:
    incoming = websocket if has_websocket_context() else request
    token = bearer_token(incoming.headers.get("Authorization"))
    if token is None and incoming is websocket:  # browsers cannot set headers on a WebSocket
        token = incoming.args.get("access_token") or None
    if token is None:
        raise ApiError(401, "unauthorized", "Auth failed: missing bearer token")
    try:
        return verify_token(env.JWT_KEY, token)
    except TokenError as exc:
        raise ApiError(401, "unauthorized", f"Auth failed: {exc}") from None


def user_sessions(user_id: str) -> Any:
    """The user's UserSessions object (base hosts the class; other services bind it by script_name)."""
    return env.USER_SESSIONS.get_by_name(user_id)


async def _signed_in() -> Claims:
    """A valid token whose session still speaks for its user: not logged out, the account not
    deleted, its role and password unchanged since the token was issued."""
    claims = _claims()
    problem = await session_problem(claims)
    if problem is not None:
        raise ApiError(401, "unauthorized", f"Auth failed: {problem}")
    return claims


async def session_problem(claims: Claims) -> str | None:
    """None while these claims still speak for their user; else why not. (A long-lived socket asks
    again as it goes: its token was checked once, at the upgrade.)"""
    return await user_sessions(claims.userId).check(claims.userId, claims.sid, claims.gen, claims.role)


async def optional_user() -> Claims | None:
    """The caller's claims if a valid token is sent, else None (a bad token is still a 401)."""
    if not request.headers.get("Authorization"):
        return None
    return await _signed_in()


def auth(role: str | None = None) -> Callable[[F], F]:
    """Require a valid, live token (and `role`, if given); the claims land in `g.user`. The route's
    document lists what that can answer: 401, 403 for a role, 503 when the session cannot be read."""
    def decorate(handler: F) -> F:
        @wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.user = await _signed_in()
            if role is not None and g.user.role != role:
                raise ApiError(403, "forbidden", f"This route needs the {role} role")
            return await handler(*args, **kwargs)
        return documents_errors(401, 503, *((403,) if role else ()))(wrapper)  # type: ignore[return-value]
    return decorate
