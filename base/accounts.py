"""The account lifecycle's mailed steps: a token is issued and its link mailed (verification after
signup, password reset, login unlock), and a link's token is spent. One place decides what a
token proves: following a verification or reset link proves the address is the account's.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.errors import ApiError
from models.web import user_sessions

from .mail import messages
from .mail.sender import mailer
from .stores.account_tokens import AccountTokens, Purpose
from .stores.users import UserStore


def invalid_token(what: str) -> ApiError:
    return ApiError(400, "invalid_token", f"This {what} link is unknown, already used or expired; ask for a new one")


async def _mail_link(env: Any, db: Any, user: dict[str, Any], purpose: Purpose, ttl_s: float,
                     compose: Callable[[Any, str], tuple[str, str]]) -> None:
    """Issue a token for `purpose` and mail the account its link (subject and text by `compose`)."""
    token = await AccountTokens(db).issue(purpose, str(user["_id"]), user["email"], ttl_s)
    mailer(env).send_soon(user["email"], *compose(env, token))


async def send_verification(env: Any, db: Any, user: dict[str, Any]) -> None:
    await _mail_link(env, db, user, "verify_email", messages.VERIFY_TTL_S, messages.verify_email)


async def verify_email(db: Any, token: str) -> dict[str, Any]:
    """The account whose address the link proves; 400 for a used, expired or unknown link."""
    record = await AccountTokens(db).consume("verify_email", token)
    user = await UserStore(db).mark_verified(record["userId"], record["email"]) if record else None
    if user is None:
        raise invalid_token("verification")
    return user


async def send_reset(env: Any, db: Any, email: str) -> None:
    """Mail a reset link if an account has this address; the caller answers the same either way."""
    user = await UserStore(db).by_email(email)
    if user is not None:
        await _mail_link(env, db, user, "reset_password", messages.RESET_TTL_S, messages.reset_password)


async def reset_password(db: Any, token: str, password_hash: str) -> None:
    """Set the password the link allows, end every session, and count the address as proven."""
    record = await AccountTokens(db).consume("reset_password", token)
    if record is None or await user_sessions(record["userId"]).set_password(
            record["userId"], password_hash, proven=True) < 0:  # (-1: the account is gone)
        raise invalid_token("password reset")
    await AccountTokens(db).revoke(record["userId"], "unlock_login")


async def send_unlock(env: Any, db: Any, email: str, retry_after_s: int) -> None:
    user = await UserStore(db).by_email(email)
    if user is not None:
        await _mail_link(env, db, user, "unlock_login", messages.UNLOCK_TTL_S,
                         lambda worker_env, token: messages.unlock_login(worker_env, token, retry_after_s))


async def unlock_holds(db: Any, token: str | None, user: dict[str, Any] | None) -> bool:
    """Does this login carry a live unlock link for this very account? (It stays usable until a
    login with it succeeds, so a typo does not spend it.)"""
    if not token or user is None:
        return False
    record = await AccountTokens(db).peek("unlock_login", token)
    return record is not None and record["userId"] == str(user["_id"])


async def spend_unlock(db: Any, token: str) -> None:
    await AccountTokens(db).consume("unlock_login", token)
