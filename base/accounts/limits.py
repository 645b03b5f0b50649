"""How many attempts an account action allows: per client address or per account, in a window
(`LOGIN_RATE_LIMIT="5/900"`), counted by the AttemptLimiter object; and what an account's limits
are keyed by."""
from __future__ import annotations

from typing import Any

from models.users import canonical_email
from web.errors import ApiError


def limit_key(email: str, user: dict[str, Any] | None) -> str:
    """What a per-account limit (the login guard, the reset-mail limit) counts under: the account
    itself when the address finds one, however it was spelt (the lookup's collation equates
    spellings a string compare does not), else the address's one canonical form."""
    return f"user:{user['_id']}" if user is not None else f"email:{canonical_email(email)}"


def _limit(spec: str) -> tuple[int, float]:
    count, _, window = str(spec).partition("/")
    return int(count), float(window)


async def limit_attempts(env: Any, name: str, spec_var: str, key: str) -> None:
    """429 with Retry-After when `key` (a client address, an account) used up `name`'s budget."""
    limit, window = _limit(env.get(spec_var, "5/900"))
    result = await env.ATTEMPT_LIMITER.get_by_name(f"{name}:{key}").hit(limit, window)
    if not result["allowed"]:
        raise ApiError(429, "rate_limited", f"Too many {name} attempts; try again in {result['retry_after']} s",
                       headers={"Retry-After": str(result["retry_after"]), "RateLimit-Limit": str(limit),
                                "RateLimit-Remaining": "0", "RateLimit-Reset": str(result["reset"])})
