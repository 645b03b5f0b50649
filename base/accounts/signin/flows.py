"""Sign-in with Google, Microsoft or Apple: start (a redirect to the provider) and finish (the
callback: state → code exchange → verified ID token → our account), with no protocol code of
our own beyond choosing the values and checking them once.

Accounts: found by the provider's subject; else the account with the token's email is linked,
or a new one created, but only when the provider says the email is verified, and an existing
account is linked only when its owner proved that address too (else 409 `account_exists`: a
signup nobody confirmed must not become a way into the provider user's account). A signed-in
user links a provider from the session instead (`start(..., link_user=...)`). An account never
gets a second subject of the same provider.

Each flow is bound to the browser that started it: the start sets a cookie holding an HMAC of
the state, and the callback must bring it back (login CSRF).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from durable.public_url import public_base_url
from models.errors_domain import Conflict
from models.users import is_plain_email
from web.errors import ApiError

from ...stores.users import UserStore
from ..links import notify
from ..mail import messages
from .oidc import Identity, OidcClient
from .providers import ISSUERS, configure, stop_local

STATE_TTL_S = 600.0
MAX_STATE_CHARS = 128
BINDING_COOKIE = "shop_signin"  # `__Host-shop_signin` wherever it is Secure (see `binding_cookie`)


class SignIn:
    """The enabled providers of this worker, one client each (their discovery and keys cached)."""

    def __init__(self, clients: dict[str, OidcClient]) -> None:
        self.clients = clients

    def client(self, provider: str) -> OidcClient:
        found = self.clients.get(provider)
        if found is None:
            known = "is not offered here" if provider in ISSUERS else "is not a sign-in provider"
            raise ApiError(404, "unknown_provider", f"{provider!r} {known}; "
                           f"offered: {', '.join(self.clients) or 'none'}")
        return found


async def install(env: Any) -> None:
    """At start-up: configure the enabled providers (local stand-ins in dev) for this worker."""
    timeout_s = float(env.get("PROVIDER_TIMEOUT_S", 10))
    providers = await configure(env)
    env.isolate_state("signin", lambda: SignIn({n: OidcClient(s, timeout_s) for n, s in providers.items()}))


async def uninstall(env: Any) -> None:
    await stop_local(env)


def flows(env: Any) -> SignIn:
    return env.isolate_state("signin", lambda: SignIn({}))


def callback_url(env: Any, provider: str) -> str:
    """Registered with the provider; behind the gateway `/user/...` reaches this worker as it is."""
    return f"{public_base_url(env)}/user/auth/{provider}/callback"


def browser_binding(env: Any, state: str) -> str:
    """The cookie value that ties `state` to the browser it was given to (an HMAC under JWT_KEY)."""
    return hmac.new(str(env.JWT_KEY).encode(), b"signin-state:" + state.encode(), hashlib.sha256).hexdigest()


def _cookie(env: Any, provider: str) -> tuple[str, bool, bool]:
    """The binding cookie's name, whether it is Secure, whether it rides cross-site. Apple answers
    by a cross-site form POST, which a `SameSite=Lax` cookie does not ride on, so its flow's cookie
    is `SameSite=None; Secure`. A Secure one is named `__Host-…`: browsers then take it only from
    https, for `Path=/` and with no `Domain`, so no sibling subdomain can plant or shadow it."""
    cross_site = flows(env).client(provider).settings.form_post
    secure = cross_site or public_base_url(env).startswith("https://")
    return ("__Host-" if secure else "") + BINDING_COOKIE, secure, cross_site


def binding_cookie_name(env: Any, provider: str) -> str:
    return _cookie(env, provider)[0]


def binding_cookie(env: Any, provider: str, binding: str) -> dict[str, Any]:
    """`Response.set_cookie` arguments for the flow's browser binding."""
    name, secure, cross_site = _cookie(env, provider)
    return {"key": name, "value": binding, "max_age": int(STATE_TTL_S), "path": "/", "httponly": True,
            "secure": secure, "samesite": "None" if cross_site else "Lax"}


async def start(env: Any, provider: str, link_user: str | None = None) -> tuple[str, str]:
    """A fresh state, nonce and PKCE verifier, kept server-side for ten minutes: the provider's URL
    and the browser binding for the cookie. `link_user`: the flow links that signed-in account."""
    client = flows(env).client(provider)
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(24), secrets.token_urlsafe(64)
    await env.SIGNIN_STATE.get_by_name(state).begin(provider, nonce, verifier, STATE_TTL_S, link_user)
    url = await client.authorization_url(callback_url(env, provider), state, nonce, verifier)
    return url, browser_binding(env, state)


async def finish(env: Any, provider: str, params: dict[str, str | None], store: UserStore,
                 cookie: str | None) -> dict[str, Any]:
    """The account the provider vouches for (or the signed-in account it was linked to), after
    every check; raises ApiError otherwise."""
    client = flows(env).client(provider)
    if params.get("error"):
        raise ApiError(401, "provider_denied", f"{provider} did not sign you in: {params['error']}",
                       [{k: v for k, v in (("error", params["error"]),
                                           ("description", params.get("error_description"))) if v}])
    state, code = params.get("state"), params.get("code")
    if not code:  # (the state stays usable: this was not the provider's answer)
        raise ApiError(401, "code_rejected", "The callback carries no authorization code; start the sign-in again")
    attempt = None
    if state and len(state) <= MAX_STATE_CHARS:
        if not cookie or not hmac.compare_digest(cookie.encode(), browser_binding(env, state).encode()):
            raise ApiError(401, "invalid_state", "This sign-in was not started in this browser; start it again")
        attempt = await env.SIGNIN_STATE.get_by_name(state).take(provider)
    if attempt is None:
        raise ApiError(401, "invalid_state", "This sign-in is unknown, already used or expired; start it again")
    id_token = await client.exchange(code, callback_url(env, provider), attempt["verifier"])
    identity = await client.verify(id_token, attempt["nonce"])
    if attempt.get("link"):
        linked = await link_for(store, str(attempt["link"]), identity)
        notify(env, linked, messages.identity_linked(env, provider))
        return linked
    found, newly_linked = await account_for(store, identity)
    if newly_linked:
        notify(env, found, messages.identity_linked(env, provider))
    return found


async def link_for(store: UserStore, user_id: str, identity: Identity) -> dict[str, Any]:
    """Link the identity to the signed-in account that started the flow (its sessions from before end)."""
    found = await store.by_identity(identity.provider, identity.subject)
    if found is not None and str(found["_id"]) != user_id:
        raise ApiError(409, "identity_conflict", f"This {identity.provider} account is linked to another account")
    try:
        linked = await store.link_to(user_id, identity.provider, identity.subject)
    except Conflict:
        raise ApiError(409, "identity_conflict",
                       f"This {identity.provider} account is linked to another account") from None
    if linked is None:
        if await store.get(user_id) is None:
            raise ApiError(401, "unauthorized", "The account that started this link no longer exists")
        raise ApiError(409, "identity_conflict", f"Your account is linked to another {identity.provider} account; "
                       f"unlink it first")
    return linked


async def account_for(store: UserStore, identity: Identity) -> tuple[dict[str, Any], bool]:
    """The account this identity opens, and whether it was linked to it just now (by its address)."""
    found = await store.by_identity(identity.provider, identity.subject)
    if found is not None:
        return found, False
    if not identity.email or not identity.email_verified:
        raise ApiError(401, "email_not_verified", f"{identity.provider} has not verified this account's email, "
                       f"so it cannot be used to sign in here")
    if not is_plain_email(identity.email):  # the lookup's collation could equate it with another address
        raise ApiError(401, "unsupported_email", f"The address {identity.provider} gave is not one a shop account "
                       f"can have; sign up with a plain address instead")
    for _ in range(2):  # a signup or another sign-in may create the email between our steps
        linked = await store.link(identity.email, identity.provider, identity.subject)
        if linked is not None:
            return linked, True
        existing = await store.by_email(identity.email)
        if existing is not None:
            if existing.get("identities", {}).get(identity.provider) == identity.subject:
                return existing, False  # a concurrent sign-in of the same person linked it first
            if not existing.get("emailVerified"):
                raise ApiError(409, "account_exists", f"An account with this email exists and has not confirmed "
                               f"the address: sign in with its password, then link {identity.provider} from the "
                               f"account (POST /user/me/identities/{identity.provider}), or reset the password")
            if provider_refused(existing, identity.provider):
                raise ApiError(409, "account_exists", f"The account with this email unlinked {identity.provider}: "
                               f"sign in to it another way, then link {identity.provider} from the account again")
            break  # the account has another subject of this provider
        try:
            return await store.create_federated(identity.email, identity.provider, identity.subject), False
        except Conflict:
            continue
    raise ApiError(409, "identity_conflict", f"The account for this email is linked to another "
                   f"{identity.provider} account")


def provider_refused(account: dict[str, Any], provider: str) -> bool:
    """Did the owner unlink this provider (so a sign-in with the address does not link it again)?"""
    return provider in (account.get("refusedLinks") or {})
