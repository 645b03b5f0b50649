"""/user: signup, login, me, delete; OAuth routes of the original answer 501."""
from __future__ import annotations

from typing import Any

from quart import Blueprint, g
from quart_schema import validate_request, validate_response

from durable import env
from models.auth import issue_token
from models.errors import ApiError
from models.users import Credentials, LoginOut, SignupOut, UserOut

from ..passwords import hash_password, verify_password
from durable.mongo import pooled_database as database
from ..stores.users import UserStore, user_out
from ..web import auth, rate_limit

bp = Blueprint("users", __name__, url_prefix="/user")


async def users() -> UserStore:
    return UserStore(await database(env))


@bp.post("/signup")
@validate_request(Credentials)
@validate_response(SignupOut, 201)
async def signup(data: Credentials) -> Any:
    await rate_limit("signup", "SIGNUP_RATE_LIMIT")
    doc = await (await users()).create(data.email, await hash_password(data.password))
    return {"message": "User created", "user": user_out(doc)}, 201


@bp.post("/login")
@validate_request(Credentials)
@validate_response(LoginOut)
async def login(data: Credentials) -> Any:
    await rate_limit("login", "LOGIN_RATE_LIMIT")
    doc = await (await users()).by_email(data.email)
    if not await verify_password(doc["password"] if doc else None, data.password) or doc is None:
        raise ApiError(401, "unauthorized", "Auth failed")
    token = issue_token(env.JWT_KEY, email=doc["email"], user_id=str(doc["_id"]), role=doc["role"])
    return {"message": "Auth successful", "token": token}


@bp.get("/me")
@auth()
@validate_response(UserOut)
async def me() -> Any:
    doc = await (await users()).get(g.user.userId)
    if doc is None:
        raise ApiError(404, "not_found", "User not found")
    return user_out(doc)


@bp.delete("/<user_id>")
@auth()
async def delete(user_id: str) -> Any:
    if g.user.role != "admin" and g.user.userId != user_id:
        raise ApiError(403, "forbidden", "You may delete only your own account")
    if not await (await users()).delete(user_id):
        raise ApiError(404, "not_found", "User not found")
    return {"message": "User deleted"}


OAUTH_PROVIDERS = frozenset({"google", "microsoft", "apple"})


@bp.route("/auth/<provider>", methods=["GET", "POST"])
@bp.route("/auth/<provider>/callback", methods=["GET", "POST"])
async def oauth(provider: str) -> Any:
    """The original's social sign-in routes: known, not offered yet (501); anything else is 404."""
    if provider not in OAUTH_PROVIDERS:
        raise ApiError(404, "not_found", "Route not found")
    raise ApiError(501, "not_implemented", f"Sign-in with {provider} is not available yet; use email and password")
