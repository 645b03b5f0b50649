"""The account lifecycle's mailed steps: a token is issued and its link mailed (verification after
signup, password reset, login unlock), a link's token is spent, and the owner is told of every
change to how the account is reached (a provider linked or unlinked, a reset). One place decides
what a token proves.

What a link proves: a verification link, followed from a session of the account it was mailed
for, proves that whoever chose the password also reads the address's mail (followed by someone
else, it would bless a squatter's password). A reset link proves only the mail: the reset makes
its follower the owner, so it removes whatever the account held before (sessions, linked
providers).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from web.auth import user_sessions
from web.errors import ApiError

from ..stores.account_tokens import AccountTokens, Purpose
from ..stores.users import UserStore
from .mail import messages
from .mail.sender import mailer
from .passwords import hash_password


def invalid_token(what: str) -> ApiError:
    return ApiError(400, "invalid_token", f"This {what} link is unknown, already used or expired; ask for a new one")


async def _mail_link(env: Any, db: Any, user: dict[str, Any], purpose: Purpose, ttl_s: float,
                     compose: Callable[[Any, str], tuple[str, str]]) -> None:
    """Issue a token for `purpose` and mail the account its link (subject and text by `compose`)."""
    token = await AccountTokens(db).issue(purpose, str(user["_id"]), user["email"], ttl_s)
    mailer(env).send_soon(user["email"], *compose(env, token))


def notify(env: Any, user: dict[str, Any], notice: tuple[str, str]) -> None:
    """Tell the address of a change to how the account is reached (no link, nothing to spend)."""
    mailer(env).send_soon(user["email"], *notice)


async def send_verification(env: Any, db: Any, user: dict[str, Any]) -> None:
    await _mail_link(env, db, user, "verify_email", messages.VERIFY_TTL_S, messages.verify_email)


async def verify_email(db: Any, token: str, user_id: str) -> dict[str, Any]:
    """The signed-in account whose address the link proves; 400 for a used, expired or unknown
    link, or one mailed for another account (which stays usable by its own)."""
    record = await AccountTokens(db).consume("verify_email", token, user_id)
    user = await UserStore(db).mark_verified(record["userId"], record["email"]) if record else None
    if user is None:
        raise invalid_token("verification")
    return user


def send_reset_soon(env: Any, db: Any, user: dict[str, Any] | None) -> None:
    """Mail a reset link if an account has this address. The token is written in the background,
    so a known address's answer does no more work than an unknown one's."""
    if user is not None:
        mailer(env).soon(_mail_link(env, db, user, "reset_password", messages.RESET_TTL_S,
                                    messages.reset_password), "mail a password reset link")


async def reset_password(env: Any, db: Any, token: str, new_password: str) -> None:
    """Set the password the link allows; every session ends, the address counts as proven and
    every provider linked before is removed (see the module's docstring). The password is hashed
    only for a live link: hashing is the expensive step, and a guessed token buys none of it."""
    tokens = AccountTokens(db)
    if await tokens.peek("reset_password", token) is None:
        raise invalid_token("password reset")
    password_hash = await hash_password(new_password)
    record = await tokens.consume("reset_password", token)  # of two uses racing, one wins
    before = await UserStore(db).get(record["userId"]) if record is not None else None
    if record is None or before is None or await user_sessions(record["userId"]).recover(
            record["userId"], password_hash) < 0:  # (-1: the account is gone)
        raise invalid_token("password reset")
    await tokens.revoke(record["userId"], "unlock_login")
    notify(env, before, messages.password_was_reset(env, before.get("identities") or {}))


async def send_unlock(env: Any, db: Any, user: dict[str, Any] | None, retry_after_s: int) -> None:
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
