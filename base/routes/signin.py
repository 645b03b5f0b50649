"""/user/auth/<provider>: sign-in with Google, Microsoft or Apple (OpenID Connect, code + PKCE).

The start answers 302 to the provider; the provider sends the shopper back to the callback
(GET, or Apple's POST `form_post`), which answers as `/user/login` does: our JWT.
"""
from __future__ import annotations

from typing import Any

from quart import Blueprint, redirect
from quart_schema import DataSource, validate_querystring, validate_request, validate_response

from durable import env
from durable.mongo import pooled_database as database
from models.users import LoginOut, SignInCallback
from models.web import documents_errors, documents_path_choices, documents_redirect

from ..signin import service
from ..signin.providers import ISSUERS
from ..stores.users import UserStore
from ..web import token_for

bp = Blueprint("signin", __name__, url_prefix="/user/auth")
PROVIDERS = list(ISSUERS)


@bp.get("/<provider>")
@documents_errors(404)
@documents_redirect("the provider's sign-in page")
@documents_path_choices(provider=PROVIDERS)
async def oauth_start(provider: str) -> Any:
    """Send the shopper to the provider; the state, nonce and PKCE verifier stay with us."""
    return redirect(await service.start(env, provider), 302)


@bp.get("/<provider>/callback")
@documents_errors(401, 404, 409)
@documents_path_choices(provider=PROVIDERS)
@validate_querystring(SignInCallback)
@validate_response(LoginOut)
async def oauth_callback(provider: str, query_args: SignInCallback) -> Any:
    return await _finish(provider, query_args)


@bp.post("/<provider>/callback")
@documents_errors(401, 404, 409)
@documents_path_choices(provider=PROVIDERS)
@validate_request(SignInCallback, source=DataSource.FORM)
@validate_response(LoginOut)
async def oauth_form_callback(provider: str, data: SignInCallback) -> Any:
    """Apple's `form_post` answer: the same callback, as a form."""
    return await _finish(provider, data)


async def _finish(provider: str, params: SignInCallback) -> Any:
    doc = await service.finish(env, provider, params.model_dump(), UserStore(await database(env)))
    return {"message": "Auth successful", "token": await token_for(doc)}
