"""The relying party of OpenID Connect's authorization code flow with PKCE, per provider.

Authlib builds the authorization URL (S256 challenge, state, nonce) and runs the token exchange;
joserfc verifies the ID token against the provider's published keys with the algorithm pinned
(RS256) and checks issuer, audience, expiry and nonce. Discovery and keys are fetched once and
kept; an unknown key id refetches the keys (providers rotate them), at most once a minute.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import ClaimError, JoseError
from joserfc.jwk import KeySet

from web.errors import ApiError

from .providers import ProviderSettings

ALGORITHMS = ["RS256"]  # what Google, Microsoft and Apple sign ID tokens with; nothing else is accepted
LEEWAY_S = 60
KEYS_REFRESH_S = 60.0


@dataclass(frozen=True)
class Identity:
    """Who the provider says signed in, from a verified ID token."""
    provider: str
    subject: str
    email: str | None
    email_verified: bool


def _truthy(value: Any) -> bool:
    return value is True or value == "true"  # Apple sends "true" as a string


class OidcClient:
    def __init__(self, settings: ProviderSettings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx2.AsyncClient(timeout=self.timeout_s) as http:
                response = await http.get(url)
                response.raise_for_status()
                body = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise ApiError(503, "provider_unavailable", f"{self.settings.name} could not be reached; try again",
                           [{"reason": type(exc).__name__}], headers={"Retry-After": "5"}) from None
        if not isinstance(body, dict):
            raise ApiError(503, "provider_unavailable", f"{self.settings.name} answered with something unexpected")
        return body

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = await self._get_json(self.settings.issuer + "/.well-known/openid-configuration")
        return self._metadata

    async def _key_set(self, refresh: bool = False) -> KeySet:
        if self._keys is None or (refresh and time.monotonic() - self._keys_at > KEYS_REFRESH_S):
            jwks = await self._get_json((await self.metadata())["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            except (JoseError, ValueError, KeyError, TypeError):
                raise ApiError(503, "provider_unavailable", f"{self.settings.name} published unusable keys") from None
            self._keys_at = time.monotonic()
        return self._keys

    def _oauth(self, redirect_uri: str, secret: str | None = None) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(self.settings.client_id, secret, scope=self.settings.scope, redirect_uri=redirect_uri,
                                 code_challenge_method="S256", token_endpoint_auth_method="client_secret_post",
                                 timeout=self.timeout_s)

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        extra = {"response_mode": "form_post"} if self.settings.form_post else {}
        endpoint = (await self.metadata())["authorization_endpoint"]
        url, _ = self._oauth(redirect_uri).create_authorization_url(endpoint, state=state, nonce=nonce,
                                                                     code_verifier=verifier, **extra)
        return str(url)

    async def exchange(self, code: str, redirect_uri: str, verifier: str) -> str:
        """The code for tokens at the token endpoint (with our client secret and the PKCE verifier);
        returns the ID token. A refused code (reused, expired, forged) is the caller's 401."""
        meta = await self.metadata()
        try:
            async with self._oauth(redirect_uri, self.settings.secret(meta["issuer"])) as client:
                token = await client.fetch_token(meta["token_endpoint"], code=code, code_verifier=verifier,
                                                 grant_type="authorization_code")
        except AuthlibBaseError as exc:
            raise ApiError(401, "code_rejected", f"{self.settings.name} refused the authorization code",
                           [{"reason": str(getattr(exc, "error", "") or exc)}]) from None
        except httpx2.HTTPError as exc:
            raise ApiError(503, "provider_unavailable", f"{self.settings.name} could not be reached; try again",
                           [{"reason": type(exc).__name__}], headers={"Retry-After": "5"}) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ApiError(401, "invalid_id_token", f"{self.settings.name} returned no ID token")
        return id_token

    async def verify(self, id_token: str, nonce: str) -> Identity:
        """Signature by a published key with the pinned algorithm, then iss, aud, exp, iat, sub, nonce."""
        try:
            token = jwt.decode(id_token, await self._key_set(), algorithms=ALGORITHMS)
        except JoseError:
            try:  # a key id we have not seen: the provider may have rotated its keys
                token = jwt.decode(id_token, await self._key_set(refresh=True), algorithms=ALGORITHMS)
            except JoseError as exc:
                raise _bad_token("signature", exc) from None
        except ValueError as exc:
            raise _bad_token("malformed", exc) from None
        claims = token.claims
        issuer = str((await self.metadata())["issuer"])
        if "{tenantid}" in issuer:  # Microsoft's multi-tenant endpoints: the issuer names the user's tenant
            issuer = issuer.replace("{tenantid}", str(claims.get("tid", "")))
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_S, iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": self.settings.client_id}, exp={"essential": True},
            iat={"essential": True}, sub={"essential": True}, nonce={"essential": True, "value": nonce})
        try:
            registry.validate(claims)
        except ClaimError as exc:
            raise _bad_token(str(getattr(exc, "claim", "") or "claims"), exc) from None
        email = claims.get("email")
        verified = _truthy(claims.get("email_verified")) or _truthy(claims.get("xms_edov"))
        return Identity(self.settings.name, str(claims["sub"]), email if isinstance(email, str) else None, verified)


def _bad_token(what: str, exc: Exception) -> ApiError:
    return ApiError(401, "invalid_id_token", f"The ID token was refused ({what})",
                    [{"check": what, "reason": getattr(exc, "description", None) or str(exc)}])
