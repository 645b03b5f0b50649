"""Sign-in with Google, Microsoft or Apple: start (a redirect to the provider) and finish (the
callback: state → code exchange → verified ID token → our account), with no protocol code of
our own beyond choosing the values and checking them once.

Accounts: found by the provider's subject; else the account with the token's email is linked,
or a new one created, but only when the provider says the email is verified. An account never
gets a second subject of the same provider.
"""
from __future__ import annotations

import secrets
from typing import Any

from durable.public_url import public_base_url
from models.errors import ApiError
from models.errors_domain import Conflict

from ..stores.users import UserStore
from .oidc import Identity, OidcClient
from .providers import ISSUERS, configure, stop_local

STATE_TTL_S = 600.0
MAX_STATE_CHARS = 128


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


async def start(env: Any, provider: str) -> str:
    """A fresh state, nonce and PKCE verifier, kept server-side for ten minutes; the provider's URL."""
    client = flows(env).client(provider)
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(24), secrets.token_urlsafe(64)
    await env.SIGNIN_STATE.get_by_name(state).begin(provider, nonce, verifier, STATE_TTL_S)
    return await client.authorization_url(callback_url(env, provider), state, nonce, verifier)


async def finish(env: Any, provider: str, params: dict[str, str | None], store: UserStore) -> dict[str, Any]:
    """The account the provider vouches for, after every check; raises ApiError otherwise."""
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
        attempt = await env.SIGNIN_STATE.get_by_name(state).take(provider)
    if attempt is None:
        raise ApiError(401, "invalid_state", "This sign-in is unknown, already used or expired; start it again")
    id_token = await client.exchange(code, callback_url(env, provider), attempt["verifier"])
    identity = await client.verify(id_token, attempt["nonce"])
    return await account_for(store, identity)


async def account_for(store: UserStore, identity: Identity) -> dict[str, Any]:
    found = await store.by_identity(identity.provider, identity.subject)
    if found is not None:
        return found
    if not identity.email or not identity.email_verified:
        raise ApiError(401, "email_not_verified", f"{identity.provider} has not verified this account's email, "
                       f"so it cannot be used to sign in here")
    for _ in range(2):  # a signup or another sign-in may create the email between our steps
        linked = await store.link(identity.email, identity.provider, identity.subject)
        if linked is not None:
            return linked
        existing = await store.by_email(identity.email)
        if existing is not None:
            if existing.get("identities", {}).get(identity.provider) == identity.subject:
                return existing  # a concurrent sign-in of the same person linked it first
            break  # the account has another subject of this provider
        try:
            return await store.create_federated(identity.email, identity.provider, identity.subject)
        except Conflict:
            continue
    raise ApiError(409, "identity_conflict", f"The account for this email is linked to another "
                   f"{identity.provider} account")
