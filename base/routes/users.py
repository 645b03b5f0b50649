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
from durable.mongo_pool import pooled_database as database
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
from web.auth import auth
from web.docs import documents_errors
from web.requests import client_ip

from ..accounts import links, service
from ..stores.users import user_out

bp = Blueprint("users", __name__, url_prefix="/user")


@bp.post("/signup")
@documents_errors(409)  # the address is taken
@validate_request(Credentials)
@validate_response(SignupOut, 201)
async def signup(data: Credentials) -> Any:
    """The account is made at once and may sign in and shop; its address counts as the owner's
    (so a provider sign-in can link to it) only once the mailed link is followed."""
    doc = await service.signup(env, data.email, data.password, client_ip())
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
    doc = await links.verify_email(await database(env), data.token, g.user.userId)
    return {"message": "Email address confirmed", "user": user_out(doc)}


@bp.post("/verify-email/resend")
@documents_errors(404, 409, 429)
@auth()
@validate_response(MessageOut, 202)
async def resend_verification() -> Any:
    """A new link (the older ones stop working); VERIFY_RESEND_RATE_LIMIT per account."""
    await service.resend_verification(env, g.user.userId)
    return {"message": "We have mailed you a new link"}, 202


@bp.post("/password/forgot")
@documents_errors(429)
@validate_request(ForgotPassword)
@validate_response(MessageOut, 202)
async def forgot_password(data: ForgotPassword) -> Any:
    """Mail a reset link (valid 30 min, once) if an account has this address; the answer is the
    same either way. Limited per client and per address (no mail bombing)."""
    await service.forgot_password(env, data.email, client_ip())
    return {"message": "If an account has this address, we have mailed it a link to set a new password"}, 202


@bp.post("/password/reset")
@documents_errors(400, 429)
@validate_request(PasswordReset)
@validate_response(MessageOut)
async def reset_password(data: PasswordReset) -> Any:
    """Set the password from a reset link; every session of the account ends, and providers linked
    before are removed. Limited per client (PASSWORD_RESET_SUBMIT_LIMIT): guessing tokens is futile,
    and a guess costs no password hash, but it still costs a lookup."""
    await service.reset_password(env, data.token, data.newPassword, client_ip())
    return {"message": "Password set; sign in with it"}


@bp.post("/login")
@documents_errors(400, 401, 429, 503)
@validate_request(LoginIn)
@validate_response(LoginOut)
async def login(data: LoginIn) -> Any:
    """A login the guard holds back mails the owner an unlock link (once an hour at most); a login
    carrying a live one is never held back (see LoginGuard)."""
    token = await service.login(env, data.email, data.password, data.unlockToken, client_ip())
    return {"message": "Auth successful", "token": token}


@bp.post("/logout")
@documents_errors(400)
@auth()
@validate_querystring(LogoutQuery)
@validate_response(MessageOut)
async def logout(query_args: LogoutQuery) -> Any:
    """End this token (or, with `?all=true`, every session of the account) at once, on every service."""
    await service.logout(g.user, bool(query_args.all))
    return {"message": "Logged out everywhere" if query_args.all else "Logged out"}


@bp.get("/me")
@auth()
@validate_response(UserOut)
async def me() -> Any:
    return user_out(await service.profile(env, g.user.userId))


@bp.patch("/me/password")
@documents_errors(400)
@auth()
@validate_request(PasswordChange)
@validate_response(PasswordChanged)
async def change_password(data: PasswordChange) -> Any:
    """Every token issued before is void at once (this one too); the answer carries a new one."""
    token = await service.change_password(env, g.user.userId, data.currentPassword, data.newPassword)
    return {"message": "Password changed", "token": token}


@bp.patch("/<oid:user_id>/role")
@documents_errors(400, 404)
@auth("admin")
@validate_request(RoleChange)
@validate_response(UserOut)
async def change_role(user_id: str, data: RoleChange) -> Any:
    """The user's tokens issued under the old role stop working at once."""
    return user_out(await service.change_role(env, user_id, data.role))


@bp.delete("/<oid:user_id>")
@documents_errors(403, 404)
@auth()
@document_response(MessageOut)
async def delete_user(user_id: str) -> Any:
    await service.delete_account(g.user, user_id)
    return {"message": "User deleted"}
