"""/user: signup, login, logout, me, password, role, delete (sign-in with providers: signin.py)."""
from __future__ import annotations

from typing import Any

from quart import Blueprint, g
from quart_schema import document_response, validate_querystring, validate_request, validate_response

from durable import env
from models.errors import ApiError
from models.ids import is_object_id
from models.users import (Credentials, LoginIn, LoginOut, LogoutQuery, MessageOut, PasswordChange, PasswordChanged,
                          RoleChange, SignupOut, UserOut)
from models.web import documents_errors, user_sessions

from ..passwords import hash_password, verify_password
from durable.mongo import pooled_database as database
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
    await rate_limit("signup", "SIGNUP_RATE_LIMIT")
    doc = await (await users()).create(data.email, await hash_password(data.password))
    return {"message": "User created", "user": user_out(doc)}, 201


@bp.post("/login")
@documents_errors(400, 401, 429, 503)
@validate_request(LoginIn)
@validate_response(LoginOut)
async def login(data: LoginIn) -> Any:
    await rate_limit("login", "LOGIN_RATE_LIMIT")
    guard = login_guard(data.email)
    ip = client_ip()
    verdict = await guard.admit(ip)
    if not verdict["allowed"]:  # the same answer whether or not the account exists
        raise ApiError(429, "login_locked", f"Too many failed logins for this account; try again in "
                       f"{verdict['retry_after']} s", headers={"Retry-After": str(verdict["retry_after"])})
    doc = await (await users()).by_email(data.email)
    if not await verify_password(doc["password"] if doc else None, data.password) or doc is None:
        raise ApiError(401, "unauthorized", "Auth failed")
    await guard.succeeded(ip)
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


def login_guard(email: str) -> Any:
    return env.LOGIN_GUARD.get_by_name(email.strip().lower())
