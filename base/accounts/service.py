"""The account service: what each account action decides, apart from HTTP. Routes parse the
request, call one function here with what they read (the client's address, the caller's claims)
and shape the answer; errors are ApiErrors, as the routes would raise them."""
from __future__ import annotations

from typing import Any

from durable.mongo_pool import pooled_database as database
from models.auth import Claims
from models.ids import is_object_id
from web.auth import user_sessions
from web.errors import ApiError

from .. import metrics
from ..stores.users import UserStore
from . import links
from .limits import limit_attempts, limit_key
from .mail import messages
from .passwords import hash_password, verify_password
from .sessions import token_for
from .signin import flows
from .signin.providers import ISSUERS

PROVIDERS = list(ISSUERS)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "User not found")


async def signup(env: Any, email: str, password: str, ip: str) -> dict[str, Any]:
    """The account is made at once; a link to confirm its address is mailed."""
    await limit_attempts(env, "signup", "SIGNUP_RATE_LIMIT", ip)
    db = await database(env)
    doc = await UserStore(db).create(email, await hash_password(password))
    await links.send_verification(env, db, doc)
    return doc


async def resend_verification(env: Any, user_id: str) -> None:
    """A new link (the older ones stop working); VERIFY_RESEND_RATE_LIMIT per account."""
    db = await database(env)
    doc = await UserStore(db).get(user_id)
    if doc is None:
        raise _not_found()
    if doc.get("emailVerified"):
        raise ApiError(409, "already_verified", "This address is already confirmed")
    await limit_attempts(env, "verify-resend", "VERIFY_RESEND_RATE_LIMIT", user_id)
    await links.send_verification(env, db, doc)


async def forgot_password(env: Any, email: str, ip: str) -> None:
    """Mail a reset link if an account has this address (the caller answers the same either way),
    limited per client and per address (no mail bombing)."""
    await limit_attempts(env, "password-forgot", "PASSWORD_RESET_RATE_LIMIT", ip)
    db = await database(env)
    doc = await UserStore(db).by_email(email.strip())
    await limit_attempts(env, "password-forgot-address", "PASSWORD_RESET_ADDRESS_LIMIT", limit_key(email, doc))
    links.send_reset_soon(env, db, doc)


async def reset_password(env: Any, token: str, new_password: str, ip: str) -> None:
    await limit_attempts(env, "password-reset", "PASSWORD_RESET_SUBMIT_LIMIT", ip)
    await links.reset_password(env, await database(env), token, new_password)


async def login(env: Any, email: str, password: str, unlock_token: str | None, ip: str) -> str:
    """A token for the account, or why not: a login the guard holds back mails the owner an unlock
    link (once an hour at most); one carrying a live link is never held back (see LoginGuard)."""
    await limit_attempts(env, "login", "LOGIN_RATE_LIMIT", ip)
    db = await database(env)
    doc = await UserStore(db).by_email(email)
    guard = env.LOGIN_GUARD.get_by_name(limit_key(email, doc))
    unlocked = await links.unlock_holds(db, unlock_token, doc)
    verdict = await guard.admit(ip, unlocked)
    if not verdict["allowed"]:  # the same answer whether or not the account exists
        metrics.SIGNINS.labels("password", "refused").inc()
        if verdict.get("notify"):
            await links.send_unlock(env, db, doc, verdict["retry_after"])
        raise ApiError(429, "login_locked", f"Too many failed logins for this account; try again in "
                       f"{verdict['retry_after']} s, or follow the link we mailed to the account's owner",
                       headers={"Retry-After": str(verdict["retry_after"])})
    if not await verify_password(doc["password"] if doc else None, password) or doc is None:
        metrics.SIGNINS.labels("password", "refused").inc()
        raise ApiError(401, "unauthorized", "Auth failed")
    if unlocked:
        await links.spend_unlock(db, str(unlock_token))
    await guard.succeeded(ip)
    metrics.SIGNINS.labels("password", "ok").inc()
    return await token_for(env, doc)


async def logout(claims: Claims, everywhere: bool) -> None:
    sessions = user_sessions(claims.userId)
    if everywhere:
        await sessions.end_all(claims.userId)
    else:
        await sessions.logout(claims.sid, claims.exp)


async def profile(env: Any, user_id: str) -> dict[str, Any]:
    doc = await UserStore(await database(env)).get(user_id)
    if doc is None:
        raise _not_found()
    return doc


async def change_password(env: Any, user_id: str, current: str, new: str) -> str:
    """Every token issued before is void at once; the answer is a new one."""
    store = UserStore(await database(env))
    doc = await store.get(user_id)
    if doc is None or not await verify_password(doc["password"], current):
        raise ApiError(401, "unauthorized", "Auth failed: the current password is wrong")
    await user_sessions(user_id).set_password(user_id, await hash_password(new))
    return await token_for(env, await store.get(user_id))


async def change_role(env: Any, user_id: str, role: str) -> dict[str, Any]:
    """The user's tokens issued under the old role stop working at once."""
    if not is_object_id(user_id) or not await user_sessions(user_id).set_role(user_id, role):
        raise _not_found()
    return await profile(env, user_id)


async def delete_account(claims: Claims, user_id: str) -> None:
    if claims.role != "admin" and claims.userId != user_id:
        raise ApiError(403, "forbidden", "You may delete only your own account")
    if not is_object_id(user_id) or not await user_sessions(user_id).delete_user(user_id):
        raise _not_found()


async def finish_sign_in(env: Any, provider: str, params: dict[str, Any], binding: str | None) -> str:
    """The provider's callback: the account it signs in (or links), and our token for it."""
    try:
        doc = await flows.finish(env, provider, params, UserStore(await database(env)), binding)
    except ApiError as exc:
        if exc.status < 500:  # a client's path names the provider: only known ones get a series
            metrics.SIGNINS.labels(provider if provider in ISSUERS else "other", "refused").inc()
        raise
    metrics.SIGNINS.labels(provider, "ok").inc()
    return await token_for(env, doc)


async def start_link(env: Any, user_id: str, provider: str) -> tuple[str, str]:
    """Where to send the browser to link `provider`, and the flow's binding; only an account whose
    email is confirmed may link."""
    doc = await UserStore(await database(env)).get(user_id)
    if doc is None:
        raise _not_found()
    if not doc.get("emailVerified"):
        raise ApiError(403, "email_not_verified", "Confirm your email address before linking a sign-in provider "
                       "(POST /user/verify-email/resend sends the link again)")
    return await flows.start(env, provider, link_user=user_id)


async def unlink(env: Any, user_id: str, provider: str) -> tuple[dict[str, Any], str]:
    """Remove a provider from the account, never its last way in; the owner is mailed, and the
    answer's token replaces every session from before."""
    if provider not in ISSUERS:
        raise ApiError(404, "unknown_provider", f"{provider!r} is not a sign-in provider")
    store = UserStore(await database(env))
    doc = await store.unlink(user_id, provider, PROVIDERS)
    if doc is None:
        current = await store.get(user_id)
        if current is None or provider not in (current.get("identities") or {}):
            raise ApiError(404, "not_linked", f"{provider} is not linked to this account")
        raise ApiError(409, "last_sign_in_method", f"{provider} is this account's only way in: set a password "
                       f"(POST /user/password/forgot) or link another provider first")
    links.notify(env, doc, messages.identity_unlinked(env, provider))
    return doc, await token_for(env, doc)
