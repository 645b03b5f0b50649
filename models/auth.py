"""JWTs every service validates itself: HS256 pinned, `exp` and `iat` required, 1 h lifetime."""
from __future__ import annotations

import time
from typing import Literal

import jwt
from pydantic import BaseModel, ValidationError

ALGORITHM = "HS256"
TOKEN_TTL_S = 3600
Role = Literal["user", "admin"]


class Claims(BaseModel):
    email: str
    userId: str
    role: Role
    iat: int
    exp: int


class TokenError(Exception):
    """The token is missing, malformed, forged, expired or uses another algorithm."""


def issue_token(secret: str, *, email: str, user_id: str, role: Role, ttl_s: int = TOKEN_TTL_S) -> str:
    now = int(time.time())
    return jwt.encode({"email": email, "userId": user_id, "role": role, "iat": now, "exp": now + ttl_s},
                      secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Claims:
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat"]})
        return Claims.model_validate(payload)
    except jwt.ExpiredSignatureError:
        raise TokenError("Token expired") from None
    except (jwt.InvalidTokenError, ValidationError):
        raise TokenError("Invalid token") from None


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
