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
from models.users import IdentityUnlinked, LinkStarted, LoginOut, SignInCallback
from web.auth import auth
from web.docs import documents_errors, documents_path_choices, documents_redirect

from ..accounts import service
from ..accounts.service import PROVIDERS
from ..accounts.signin import flows
from ..stores.users import user_out

bp = Blueprint("signin", __name__, url_prefix="/user")


@bp.get("/auth/<provider>")
@documents_errors(404)
@documents_redirect("the provider's sign-in page")
@documents_path_choices(provider=PROVIDERS)
async def oauth_start(provider: str) -> Any:
    """Send the shopper to the provider; the state, nonce and PKCE verifier stay with us."""
    url, binding = await flows.start(env, provider)
    response = redirect(url, 302)
    response.set_cookie(**flows.binding_cookie(env, provider, binding))
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
    binding = request.cookies.get(flows.binding_cookie_name(env, provider))
    return {"message": "Auth successful",
            "token": await service.finish_sign_in(env, provider, params.model_dump(), binding)}


@bp.post("/me/identities/<provider>")
@documents_errors(403, 404)
@documents_path_choices(provider=PROVIDERS)
@auth()
@document_response(LinkStarted)
async def link_start(provider: str) -> Any:
    """Start linking a provider to this account: send the browser to `authorizationUrl` (this answer's
    cookie binds the flow to it); the callback links the account and answers with a new token
    (sessions from before the link end). Only an account whose email is confirmed may link."""
    url, binding = await service.start_link(env, g.user.userId, provider)
    response = jsonify({"message": f"Continue at {provider}", "authorizationUrl": url})
    response.set_cookie(**flows.binding_cookie(env, provider, binding))
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
    doc, token = await service.unlink(env, g.user.userId, provider)
    return {"message": f"{provider} unlinked", "user": user_out(doc), "token": token}
