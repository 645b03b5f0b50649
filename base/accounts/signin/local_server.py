"""Local OpenID Connect providers for development and tests: Google, Microsoft and Apple as
they behave on the wire, so the real sign-in client code runs against them.

One aiohttp server on 127.0.0.1 hosts one issuer per provider at `/<provider>`: discovery,
JWKS, an authorize endpoint that approves the configured test identity at once (Apple answers
with an auto-submitting `form_post` page, as Apple does), and a token endpoint that checks the
client's credentials (Apple's: an ES256 JWT), the single-use code, its redirect URI and the
PKCE verifier. Controls under `/_local/<provider>/identity` set who signs in next, and whether
the next ID tokens are tampered with (for the attack tests).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from durable.dev.local_servers import serve_locally

CODE_TTL_S = 60
TAMPERS = frozenset({"signature", "expired", "audience", "issuer", "nonce", "algorithm"})


@dataclass
class LocalClient:
    """What the provider knows of our app: a client secret, or (Apple) the team, key id and
    public key that our ES256 client secrets are checked with."""
    client_id: str
    client_secret: str | None = None
    team_id: str | None = None
    key_id: str | None = None
    public_key_pem: str | None = None


@dataclass
class Issuer:
    name: str
    client: LocalClient
    identity: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)


def default_identity(provider: str) -> dict[str, Any]:
    return {"sub": f"local-{provider}-{secrets.token_hex(6)}", "email": f"shopper@{provider}.example",
            "email_verified": True, "name": f"Local {provider.title()} Shopper"}


class LocalOidcProviders:
    title = "OpenID Connect"

    def __init__(self, clients: dict[str, LocalClient]) -> None:
        self.issuers = {name: Issuer(name, client, default_identity(name)) for name, client in clients.items()}
        self.key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"},
                                       private=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def issuer_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{p}/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{p}/jwks", self._jwks)
        app.router.add_get("/{p}/authorize", self._authorize)
        app.router.add_post("/{p}/token", self._token)
        app.router.add_post("/_local/{p}/identity", self._set_identity)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.url = await serve_locally(self.app(), host, port)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _issuer(self, request: web.Request) -> Issuer:
        found = self.issuers.get(request.match_info["p"])
        if found is None:
            raise web.HTTPNotFound()
        return found

    # -- the provider's API ---------------------------------------------------------------
    async def _discovery(self, request: web.Request) -> web.Response:
        issuer = self._issuer(request)
        base = self.issuer_url(issuer.name)
        return web.json_response({
            "issuer": base, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks", "response_types_supported": ["code"],
            "response_modes_supported": ["query", "form_post"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile", "name"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["sub", "email", "email_verified", "name", "nonce"]})

    async def _jwks(self, request: web.Request) -> web.Response:
        self._issuer(request)
        return web.json_response(KeySet([self.key]).as_dict(private=False))

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        issuer, q = self._issuer(request), request.query
        if q.get("client_id") != issuer.client.client_id:
            return web.Response(status=400, text="unknown client_id")  # never redirect to an unverified client
        redirect_uri = q.get("redirect_uri", "")
        if not redirect_uri.startswith(("http://", "https://")):
            return web.Response(status=400, text="redirect_uri is required")
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge") \
                or "openid" not in q.get("scope", "").split():
            return self._back(redirect_uri, q.get("response_mode"),
                              {"error": "invalid_request", "state": q.get("state", "")})
        if issuer.identity.get("deny"):
            return self._back(redirect_uri, q.get("response_mode"),
                              {"error": "access_denied", "state": q.get("state", "")})
        code = secrets.token_urlsafe(24)
        issuer.codes[code] = {"redirect_uri": redirect_uri, "challenge": q["code_challenge"],
                              "nonce": q.get("nonce"), "identity": dict(issuer.identity),
                              "expires": time.time() + CODE_TTL_S}
        return self._back(redirect_uri, q.get("response_mode"), {"code": code, "state": q.get("state", "")})

    @staticmethod
    def _back(redirect_uri: str, mode: str | None, params: dict[str, str]) -> web.StreamResponse:
        if mode == "form_post":  # Apple's way: the browser POSTs the result to the redirect URI
            fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in params.items())
            page = (f'<!doctype html><html><body onload="document.forms[0].submit()">'
                    f'<form method="post" action="{html.escape(redirect_uri)}">{fields}</form></body></html>')
            return web.Response(text=page, content_type="text/html")
        joiner = "&" if "?" in redirect_uri else "?"
        raise web.HTTPFound(redirect_uri + joiner + urlencode(params))

    async def _token(self, request: web.Request) -> web.Response:
        issuer = self._issuer(request)
        form = await request.post()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        problem = self._client_problem(issuer, str(client_id or ""), str(client_secret or ""))
        if problem:
            return web.json_response({"error": "invalid_client", "error_description": problem}, status=401)
        if form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        grant = issuer.codes.pop(str(form.get("code", "")), None)  # single use, whatever follows
        if grant is None or grant["expires"] < time.time():
            return _invalid_grant("the code is unknown, used or expired")
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return _invalid_grant("redirect_uri does not match the authorization request")
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or not secrets.compare_digest(challenge, grant["challenge"]):
            return _invalid_grant("PKCE verification failed")
        id_token = self._id_token(issuer, grant["identity"], grant["nonce"])
        return web.json_response({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                  "expires_in": 3600, "scope": "openid email profile", "id_token": id_token})

    def _client_problem(self, issuer: Issuer, client_id: str, client_secret: str) -> str | None:
        client = issuer.client
        if client_id != client.client_id:
            return "unknown client"
        if client.public_key_pem is None:
            return None if secrets.compare_digest(client_secret, client.client_secret or "") else "bad client secret"
        try:  # Apple: the secret is a JWT signed with the developer's key
            token = jwt.decode(client_secret, ECKey.import_key(client.public_key_pem), algorithms=["ES256"])
            jwt.JWTClaimsRegistry(iss={"essential": True, "value": client.team_id},
                                  sub={"essential": True, "value": client.client_id},
                                  aud={"essential": True, "value": self.issuer_url(issuer.name)},
                                  exp={"essential": True}).validate(token.claims)
        except (JoseError, ValueError) as exc:
            return f"bad client secret JWT: {exc}"
        return None if token.header.get("kid") == client.key_id else "client secret JWT names another key"

    def _id_token(self, issuer: Issuer, identity: dict[str, Any], nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer_url(issuer.name), "aud": issuer.client.client_id,
                                  "sub": identity["sub"], "iat": now, "exp": now + 600, "auth_time": now}
        if nonce is not None:
            claims["nonce"] = nonce
        for name in ("email", "email_verified", "name"):
            if name in identity:
                claims[name] = identity[name]
        if issuer.name == "apple" and "email_verified" in claims:
            claims["email_verified"] = "true" if claims["email_verified"] else "false"  # Apple sends strings
        key, header = self.key, {"alg": "RS256", "kid": self.key.kid}
        tamper = identity.get("tamper")
        if tamper == "expired":
            claims.update(iat=now - 3600, exp=now - 1800)
        elif tamper == "audience":
            claims["aud"] = "someone-elses-client"
        elif tamper == "issuer":
            claims["iss"] = "https://evil.example"
        elif tamper == "nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        elif tamper == "signature":  # signed by a key that is not in the JWKS, under its kid
            key = RSAKey.generate_key(2048, private=True)
        elif tamper == "algorithm":  # HS256 keyed with the public key: the classic confusion, forged by
            return _hs256_forgery({"alg": "HS256", "kid": self.key.kid}, claims,  # hand (libraries refuse)
                                  self.key.as_pem(private=False))
        return jwt.encode(header, claims, key)

    # -- controls -------------------------------------------------------------------------
    async def _set_identity(self, request: web.Request) -> web.Response:
        """Who signs in next: {sub, email, email_verified, name}, `deny: true` to refuse, and
        `tamper` (signature, expired, audience, issuer, nonce, algorithm) to spoil the ID token."""
        issuer = self._issuer(request)
        body = await request.json()
        if not isinstance(body, dict) or (body.get("tamper") not in (None, *TAMPERS)):
            return web.json_response({"error": f"tamper must be one of {sorted(TAMPERS)}"}, status=400)
        issuer.identity = {**default_identity(issuer.name), **body}
        return web.json_response(issuer.identity)


def _invalid_grant(description: str) -> web.Response:
    return web.json_response({"error": "invalid_grant", "error_description": description}, status=400)


def _hs256_forgery(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    signing_input = f"{part(header)}.{part(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
