"""/user/auth/<provider>: sign-in with Google, Microsoft or Apple (OpenID Connect, code + PKCE), and
/user/me/identities/<provider>: a signed-in account links or unlinks a provider.

The start answers 302 to the provider and sets the cookie that binds the flow to this browser;
the provider sends the shopper back to the callback (GET, or Apple's POST `form_post`), which
answers as `/user/login` does: our JWT.
"""
from __future__ import annotations

from typing import Any

from quart import Blueprint, g, jsonify, redirect, request
from quart_schema import (
    DataSource,
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from durable import env
from durable.mongo import pooled_database as database
from models.users import IdentityUnlinked, LinkStarted, LoginOut, SignInCallback
from web.docs import documents_errors, documents_path_choices, documents_redirect
from web.errors import ApiError

from .. import accounts, metrics
from ..mail import messages
from ..signin import service
from ..signin.providers import ISSUERS
from ..stores.users import UserStore, user_out
from ..web import auth, token_for

bp = Blueprint("signin", __name__, url_prefix="/user")
PROVIDERS = list(ISSUERS)


@bp.get("/auth/<provider>")
@documents_errors(404)
@documents_redirect("the provider's sign-in page")
@documents_path_choices(provider=PROVIDERS)
async def oauth_start(provider: str) -> Any:
    """Send the shopper to the provider; the state, nonce and PKCE verifier stay with us."""
    url, binding = await service.start(env, provider)
    response = redirect(url, 302)
    response.set_cookie(**service.binding_cookie(env, provider, binding))
    return response


@bp.get("/auth/<provider>/callback")
@documents_errors(401, 404, 409)
@documents_path_choices(provider=PROVIDERS)
@validate_querystring(SignInCallback)
@validate_response(LoginOut)
async def oauth_callback(provider: str, query_args: SignInCallback) -> Any:
    return await _finish(provider, query_args)


@bp.post("/auth/<provider>/callback")
@documents_errors(401, 404, 409)
@documents_path_choices(provider=PROVIDERS)
@validate_request(SignInCallback, source=DataSource.FORM)
@validate_response(LoginOut)
async def oauth_form_callback(provider: str, data: SignInCallback) -> Any:
    """Apple's `form_post` answer: the same callback, as a form."""
    return await _finish(provider, data)


async def _finish(provider: str, params: SignInCallback) -> Any:
    try:
        doc = await service.finish(env, provider, params.model_dump(), UserStore(await database(env)),
                                   request.cookies.get(service.binding_cookie_name(env, provider)))
    except ApiError as exc:
        if exc.status < 500:  # a client's path names the provider: only known ones get a series
            metrics.SIGNINS.labels(provider if provider in ISSUERS else "other", "refused").inc()
        raise
    metrics.SIGNINS.labels(provider, "ok").inc()
    return {"message": "Auth successful", "token": await token_for(doc)}


@bp.post("/me/identities/<provider>")
@documents_errors(403, 404)
@documents_path_choices(provider=PROVIDERS)
@auth()
@document_response(LinkStarted)
async def link_start(provider: str) -> Any:
    """Start linking a provider to this account: send the browser to `authorizationUrl` (this answer's
    cookie binds the flow to it); the callback links the account and answers with a new token
    (sessions from before the link end). Only an account whose email is confirmed may link."""
    doc = await UserStore(await database(env)).get(g.user.userId)
    if doc is None:
        raise ApiError(404, "not_found", "User not found")
    if not doc.get("emailVerified"):
        raise ApiError(403, "email_not_verified", "Confirm your email address before linking a sign-in provider "
                       "(POST /user/verify-email/resend sends the link again)")
    url, binding = await service.start(env, provider, link_user=g.user.userId)
    response = jsonify({"message": f"Continue at {provider}", "authorizationUrl": url})
    response.set_cookie(**service.binding_cookie(env, provider, binding))
    return response


@bp.delete("/me/identities/<provider>")
@documents_errors(404, 409)
@documents_path_choices(provider=PROVIDERS)
@auth()
@validate_response(IdentityUnlinked)
async def unlink(provider: str) -> Any:
    """Remove a provider from this account; never the last way in (a password or another provider).
    Every session from before ends (the answer carries a new token), the owner is mailed, and a
    sign-in with the address does not link the provider again until it is linked from the account."""
    if provider not in ISSUERS:
        raise ApiError(404, "unknown_provider", f"{provider!r} is not a sign-in provider")
    store = UserStore(await database(env))
    doc = await store.unlink(g.user.userId, provider, PROVIDERS)
    if doc is None:
        current = await store.get(g.user.userId)
        if current is None or provider not in (current.get("identities") or {}):
            raise ApiError(404, "not_linked", f"{provider} is not linked to this account")
        raise ApiError(409, "last_sign_in_method", f"{provider} is this account's only way in: set a password "
                       f"(POST /user/password/forgot) or link another provider first")
    accounts.notify(env, doc, messages.identity_unlinked(env, provider))
    return {"message": f"{provider} unlinked", "user": user_out(doc), "token": await token_for(doc)}
