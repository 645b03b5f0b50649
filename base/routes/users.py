"""/user: signup, email verification, login, logout, me, password (change, forgot, reset), role,
delete (sign-in with providers and linking them: signin.py)."""
from __future__ import annotations

from typing import Any

from quart import Blueprint, g
from quart_schema import (
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from durable import env
from durable.mongo import pooled_database as database
from models.ids import is_object_id
from models.users import (
    AccountToken,
    Credentials,
    ForgotPassword,
    LoginIn,
    LoginOut,
    LogoutQuery,
    MessageOut,
    PasswordChange,
    PasswordChanged,
    PasswordReset,
    RoleChange,
    SignupOut,
    UserChanged,
    UserOut,
)
from web.auth import user_sessions
from web.docs import documents_errors
from web.errors import ApiError

from .. import accounts, metrics
from ..passwords import hash_password, verify_password
from ..stores.users import UserStore, user_out
from ..web import auth, client_ip, rate_limit, token_for

bp = Blueprint("users", __name__, url_prefix="/user")


async def users() -> UserStore:
    return UserStore(await database(env))


@bp.post("/signup")
@documents_errors(409)  # the address is taken
@validate_request(Credentials)
@validate_response(SignupOut, 201)
async def signup(data: Credentials) -> Any:
    """The account is made at once and may sign in and shop; its address counts as the owner's
    (so a provider sign-in can link to it) only once the mailed link is followed."""
    await rate_limit("signup", "SIGNUP_RATE_LIMIT")
    db = await database(env)
    doc = await UserStore(db).create(data.email, await hash_password(data.password))
    await accounts.send_verification(env, db, doc)
    return {"message": "User created", "user": user_out(doc)}, 201  # and a link to confirm the address is mailed


@bp.post("/verify-email")
@documents_errors(400)
@auth()
@validate_request(AccountToken)
@validate_response(UserChanged)
async def verify_email(data: AccountToken) -> Any:
    """The token from the verification mail, once, from a session of the account it was mailed
    for: confirming proves that whoever chose the password reads the address's mail (a link
    followed by anyone else would bless a password someone else chose)."""
    doc = await accounts.verify_email(await database(env), data.token, g.user.userId)
    return {"message": "Email address confirmed", "user": user_out(doc)}


@bp.post("/verify-email/resend")
@documents_errors(404, 409, 429)
@auth()
@validate_response(MessageOut, 202)
async def resend_verification() -> Any:
    """A new link (the older ones stop working); VERIFY_RESEND_RATE_LIMIT per account."""
    db = await database(env)
    doc = await UserStore(db).get(g.user.userId)
    if doc is None:
        raise ApiError(404, "not_found", "User not found")
    if doc.get("emailVerified"):
        raise ApiError(409, "already_verified", "This address is already confirmed")
    await rate_limit("verify-resend", "VERIFY_RESEND_RATE_LIMIT", key=g.user.userId)
    await accounts.send_verification(env, db, doc)
    return {"message": "We have mailed you a new link"}, 202


@bp.post("/password/forgot")
@documents_errors(429)
@validate_request(ForgotPassword)
@validate_response(MessageOut, 202)
async def forgot_password(data: ForgotPassword) -> Any:
    """Mail a reset link (valid 30 min, once) if an account has this address; the answer is the
    same either way. Limited per client and per address (no mail bombing)."""
    await rate_limit("password-forgot", "PASSWORD_RESET_RATE_LIMIT")
    db = await database(env)
    doc = await UserStore(db).by_email(data.email.strip())
    await rate_limit("password-forgot-address", "PASSWORD_RESET_ADDRESS_LIMIT", key=accounts.limit_key(data.email, doc))
    accounts.send_reset_soon(env, db, doc)
    return {"message": "If an account has this address, we have mailed it a link to set a new password"}, 202


@bp.post("/password/reset")
@documents_errors(400, 429)
@validate_request(PasswordReset)
@validate_response(MessageOut)
async def reset_password(data: PasswordReset) -> Any:
    """Set the password from a reset link; every session of the account ends, and providers linked
    before are removed. Limited per client (PASSWORD_RESET_SUBMIT_LIMIT): guessing tokens is futile,
    and a guess costs no password hash, but it still costs a lookup."""
    await rate_limit("password-reset", "PASSWORD_RESET_SUBMIT_LIMIT")
    await accounts.reset_password(env, await database(env), data.token, data.newPassword)
    return {"message": "Password set; sign in with it"}


@bp.post("/login")
@documents_errors(400, 401, 429, 503)
@validate_request(LoginIn)
@validate_response(LoginOut)
async def login(data: LoginIn) -> Any:
    """A login the guard holds back mails the owner an unlock link (once an hour at most); a login
    carrying a live one is never held back (see LoginGuard)."""
    await rate_limit("login", "LOGIN_RATE_LIMIT")
    db = await database(env)
    doc = await UserStore(db).by_email(data.email)
    guard = env.LOGIN_GUARD.get_by_name(accounts.limit_key(data.email, doc))
    ip = client_ip()
    unlocked = await accounts.unlock_holds(db, data.unlockToken, doc)
    verdict = await guard.admit(ip, unlocked)
    if not verdict["allowed"]:  # the same answer whether or not the account exists
        metrics.SIGNINS.labels("password", "refused").inc()
        if verdict.get("notify"):
            await accounts.send_unlock(env, db, doc, verdict["retry_after"])
        raise ApiError(429, "login_locked", f"Too many failed logins for this account; try again in "
                       f"{verdict['retry_after']} s, or follow the link we mailed to the account's owner",
                       headers={"Retry-After": str(verdict["retry_after"])})
    if not await verify_password(doc["password"] if doc else None, data.password) or doc is None:
        metrics.SIGNINS.labels("password", "refused").inc()
        raise ApiError(401, "unauthorized", "Auth failed")
    if unlocked:
        await accounts.spend_unlock(db, str(data.unlockToken))
    await guard.succeeded(ip)
    metrics.SIGNINS.labels("password", "ok").inc()
    return {"message": "Auth successful", "token": await token_for(doc)}


@bp.post("/logout")
@documents_errors(400)
@auth()
@validate_querystring(LogoutQuery)
@validate_response(MessageOut)
async def logout(query_args: LogoutQuery) -> Any:
    """End this token (or, with `?all=true`, every session of the account) at once, on every service."""
    sessions = user_sessions(g.user.userId)
    if query_args.all:
        await sessions.end_all(g.user.userId)
        return {"message": "Logged out everywhere"}
    await sessions.logout(g.user.sid, g.user.exp)
    return {"message": "Logged out"}


@bp.get("/me")
@auth()
@validate_response(UserOut)
async def me() -> Any:
    doc = await (await users()).get(g.user.userId)
    if doc is None:
        raise ApiError(404, "not_found", "User not found")
    return user_out(doc)


@bp.patch("/me/password")
@documents_errors(400)
@auth()
@validate_request(PasswordChange)
@validate_response(PasswordChanged)
async def change_password(data: PasswordChange) -> Any:
    """Every token issued before is void at once (this one too); the answer carries a new one."""
    store = await users()
    doc = await store.get(g.user.userId)
    if doc is None or not await verify_password(doc["password"], data.currentPassword):
        raise ApiError(401, "unauthorized", "Auth failed: the current password is wrong")
    await user_sessions(g.user.userId).set_password(g.user.userId, await hash_password(data.newPassword))
    return {"message": "Password changed", "token": await token_for(await store.get(g.user.userId))}


@bp.patch("/<oid:user_id>/role")
@documents_errors(400, 404)
@auth("admin")
@validate_request(RoleChange)
@validate_response(UserOut)
async def change_role(user_id: str, data: RoleChange) -> Any:
    """The user's tokens issued under the old role stop working at once."""
    _check_id(user_id)
    if not await user_sessions(user_id).set_role(user_id, data.role):
        raise ApiError(404, "not_found", "User not found")
    doc = await (await users()).get(user_id)
    if doc is None:
        raise ApiError(404, "not_found", "User not found")
    return user_out(doc)


@bp.delete("/<oid:user_id>")
@documents_errors(403, 404)
@auth()
@document_response(MessageOut)
async def delete_user(user_id: str) -> Any:
    if g.user.role != "admin" and g.user.userId != user_id:
        raise ApiError(403, "forbidden", "You may delete only your own account")
    _check_id(user_id)
    if not await user_sessions(user_id).delete_user(user_id):
        raise ApiError(404, "not_found", "User not found")
    return {"message": "User deleted"}


def _check_id(user_id: str) -> None:
    if not is_object_id(user_id):
        raise ApiError(404, "not_found", "User not found")

