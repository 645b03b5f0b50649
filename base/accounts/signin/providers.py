"""Which sign-in providers this worker offers, and with what settings.

`SIGNIN_PROVIDERS` (default "google,microsoft,apple") names them. Each needs its client settings
from secrets: Google and Microsoft a client id and secret; Apple its services id, team id, key id
and the private key its ES256 client secret is signed with. In development with
`LOCAL_PROVIDERS = "auto"`, a provider without its client id is served by a local OpenID Connect
server (`local_server.py`) instead; in production a missing setting stops the start.
"""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from durable.dev.local_servers import claim
from durable.errors import StartupRefused

log = logging.getLogger("rest_shop.signin")

ISSUERS = {"google": "https://accounts.google.com",
           "microsoft": "https://login.microsoftonline.com/{tenant}/v2.0",
           "apple": "https://appleid.apple.com"}
SETTINGS = {"google": ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"),
            "microsoft": ("MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET"),
            "apple": ("APPLE_CLIENT_ID", "APPLE_TEAM_ID", "APPLE_KEY_ID", "APPLE_PRIVATE_KEY")}
APPLE_SECRET_TTL_S = 3600  # Apple allows up to six months; a short one limits a leaked secret


class MissingSignInSettings(StartupRefused):
    """An enabled sign-in provider without its settings where local stand-ins are not allowed."""


@dataclass
class ProviderSettings:
    name: str
    issuer: str
    client_id: str
    client_secret: str | None = None          # Google, Microsoft
    apple_team_id: str | None = None
    apple_key_id: str | None = None
    apple_private_key: str | None = None      # PEM, P-256
    _apple_secret: tuple[float, str] = field(default=(0.0, ""), repr=False)

    @property
    def form_post(self) -> bool:
        """Apple returns the code by a POST to the callback when email or name is asked for."""
        return self.name == "apple"

    @property
    def scope(self) -> str:
        return "openid email name" if self.name == "apple" else "openid email profile"

    def secret(self, token_endpoint_audience: str) -> str:
        """The client secret for a token request: as configured, or (Apple) an ES256 JWT from the
        team id, key id and private key, made anew before it expires."""
        if self.apple_private_key is None:
            return self.client_secret or ""
        made_at, value = self._apple_secret
        now = time.time()
        if now - made_at > APPLE_SECRET_TTL_S / 2:
            key = ECKey.import_key(self.apple_private_key)
            value = jwt.encode({"alg": "ES256", "kid": self.apple_key_id},
                               {"iss": self.apple_team_id, "iat": int(now), "exp": int(now) + APPLE_SECRET_TTL_S,
                                "aud": token_endpoint_audience, "sub": self.client_id}, key)
            self._apple_secret = (now, value)
        return value


def enabled(env: Any) -> list[str]:
    names = [n.strip() for n in str(env.get("SIGNIN_PROVIDERS", ",".join(ISSUERS))).split(",") if n.strip()]
    unknown = [n for n in names if n not in ISSUERS]
    if unknown:
        raise MissingSignInSettings(f"SIGNIN_PROVIDERS names unknown provider(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(ISSUERS)}")
    return names


def _local_allowed(env: Any) -> bool:
    return str(env.get("LOCAL_PROVIDERS", "auto")) == "auto"


def settings_problems(env: Any) -> list[str]:
    """Without local stand-ins, every enabled provider needs all its settings: say which are missing."""
    try:
        names = enabled(env)
    except MissingSignInSettings as exc:
        return [str(exc)]
    if _local_allowed(env):
        return []
    missing = {n: [s for s in SETTINGS[n] if not env.get(s)] for n in names}
    return [f"sign-in provider {n} is enabled without its settings: {n} needs {', '.join(m)} (set them, or "
            f"remove {n} from SIGNIN_PROVIDERS)" for n, m in missing.items() if m]


def from_env(name: str, env: Any) -> ProviderSettings:
    issuer = ISSUERS[name].format(tenant=str(env.get("MICROSOFT_TENANT", "common")))
    if name == "apple":
        return ProviderSettings(name, issuer, env.get("APPLE_CLIENT_ID"), apple_team_id=env.get("APPLE_TEAM_ID"),
                                apple_key_id=env.get("APPLE_KEY_ID"),
                                apple_private_key=env.get("APPLE_PRIVATE_KEY"))
    client_id, client_secret = (env.get(s) for s in SETTINGS[name])
    return ProviderSettings(name, issuer, client_id, client_secret)


async def configure(env: Any) -> dict[str, ProviderSettings]:
    """The enabled providers' settings; in dev, local OpenID Connect servers for those without
    a client id, shared by the processes of this dev state (the nodes of `wrangler dev --nodes`)."""
    problems = settings_problems(env)
    if problems:
        raise MissingSignInSettings("; ".join(problems))
    names = enabled(env)
    local_names = [n for n in names if _local_allowed(env) and not env.get(SETTINGS[n][0])]
    started: list[Any] = env.isolate_state("signin.local_servers", list)
    local = await claim(env.state_dir / "signin", local_names,
                        lambda wanted: _start_local(wanted, started)) if local_names else {}
    chosen: dict[str, ProviderSettings] = {}
    for name in names:
        if name in local:
            rec = local[name]
            chosen[name] = ProviderSettings(name, rec["issuer"], rec["client_id"], rec.get("client_secret"),
                                            rec.get("team_id"), rec.get("key_id"), rec.get("private_key"))
        else:
            chosen[name] = from_env(name, env)
    return chosen


async def _start_local(names: list[str], started: list[Any]) -> dict[str, dict[str, str]]:
    from .local_server import LocalClient, LocalOidcProviders
    records: dict[str, dict[str, str]] = {}
    clients: dict[str, LocalClient] = {}
    for name in names:
        client_id = f"local-{name}-{secrets.token_hex(4)}"
        if name == "apple":
            key = ECKey.generate_key("P-256", private=True)
            key_id, team_id = secrets.token_hex(5).upper(), secrets.token_hex(5).upper()
            clients[name] = LocalClient(client_id, team_id=team_id, key_id=key_id,
                                        public_key_pem=key.as_pem(private=False).decode())
            records[name] = {"client_id": client_id, "team_id": team_id, "key_id": key_id,
                             "private_key": key.as_pem(private=True).decode()}
        else:
            client_secret = secrets.token_urlsafe(24)
            clients[name] = LocalClient(client_id, client_secret)
            records[name] = {"client_id": client_id, "client_secret": client_secret}
    server = LocalOidcProviders(clients)
    await server.start()
    started.append(server)
    for name in names:
        records[name]["issuer"] = server.issuer_url(name)
        log.warning("%s is not set: signing in with %s through the local OpenID Connect server at %s",
                    SETTINGS[name][0], name, server.issuer_url(name))
    return records


async def stop_local(env: Any) -> None:
    started: list[Any] = env.isolate_state("signin.local_servers", list)
    while started:
        await started.pop().stop()
