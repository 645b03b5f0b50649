"""JWTs every service validates itself: HS256 pinned, `exp` and `iat` required, 1 h lifetime.

A token also names its session (`sid`, random per login) and the user's token generation
(`gen`): the user's `UserSessions` object says whether that session still speaks for the user
(not logged out, generation not bumped by a password or role change, account not deleted).
"""
from __future__ import annotations

import functools
import secrets
import time

import jwt
from pydantic import ValidationError

from models.auth import Claims, Role

ALGORITHM = "HS256"
TOKEN_TTL_S = 3600


class TokenError(Exception):
    """The token is missing, malformed, forged, expired or uses another algorithm."""


def issue_token(secret: str, *, email: str, user_id: str, role: Role, gen: int = 0, ttl_s: int = TOKEN_TTL_S,
                sid: str | None = None) -> str:
    now = int(time.time())
    return jwt.encode({"email": email, "userId": user_id, "role": role, "iat": now, "exp": now + ttl_s,
                       "sid": sid or secrets.token_urlsafe(12), "gen": gen}, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Claims:
    """The token's claims, or TokenError. A token is checked once per process: the gateway and
    the service (and every request of a session) reuse the verdict, and expiry is checked anew."""
    claims = _verified(secret, token)
    if isinstance(claims, TokenError):
        raise TokenError(str(claims))
    if claims.exp <= time.time():
        raise TokenError("Token expired")
    return claims


@functools.lru_cache(maxsize=8192)
def _verified(secret: str, token: str) -> Claims | TokenError:
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sid"]})
        return Claims.model_validate(payload)
    except jwt.ExpiredSignatureError:
        return TokenError("Token expired")
    except (jwt.InvalidTokenError, ValidationError):
        return TokenError("Invalid token")


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
