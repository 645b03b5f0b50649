"""Rate-limit configuration and whose bucket a request spends from.

`RATE_LIMITS = "base.read=600/60, base.write=120/60, ..."`: per upstream and route class (read =
GET/HEAD, write = the rest, webhook = provider callbacks, upgrade = WebSocket upgrades), requests
per period in seconds.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from web.tokens import TokenError, bearer_token, verify_token

_ENTRY = re.compile(r"^\s*(\w+)\.(read|write|webhook|upgrade)\s*=\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*$")
_USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Limit:
    limit: int
    period_s: float


# Provider callbacks are limited per source even when RATE_LIMITS names no webhook class: a flood
# of PayPal-shaped POSTs would otherwise buy unlimited outbound verification calls.
DEFAULT_WEBHOOK_LIMIT = Limit(600, 60.0)
# WebSocket upgrades are their own small class: each one holds a connection open for long, so a
# client's budget of reads must not buy hundreds of sockets.
DEFAULT_UPGRADE_LIMIT = Limit(30, 60.0)
DEFAULTS = {"webhook": DEFAULT_WEBHOOK_LIMIT, "upgrade": DEFAULT_UPGRADE_LIMIT}


@functools.lru_cache(maxsize=8)
def parse_limits(spec: str) -> dict[str, Limit]:
    limits: dict[str, Limit] = {}
    for part in filter(str.strip, spec.split(",")):
        match = _ENTRY.match(part)
        if match is None or int(match.group(3)) < 1 or float(match.group(4)) <= 0:
            raise ValueError(f"RATE_LIMITS entry {part.strip()!r} is not "
                             f"<service>.<read|write|webhook|upgrade>=<count>/<seconds>")
        limits[f"{match.group(1)}.{match.group(2)}"] = Limit(int(match.group(3)), float(match.group(4)))
    return limits


def limit_for(spec: str, upstream: str, kind: str) -> Limit | None:
    """The configured limit of `<upstream>.<kind>`; webhooks and upgrades fall back to DEFAULTS."""
    limit = parse_limits(spec).get(f"{upstream}.{kind}")
    return DEFAULTS.get(kind) if limit is None else limit


PROVIDER_CALLBACKS = ("/payments/webhooks/", "/payments/mpesa/callback")


def route_class(method: str, path: str = "", websocket: bool = False) -> str:
    """read (GET/HEAD), write, webhook or upgrade: providers call from a few addresses in bursts and
    authenticate themselves, so they get their own budget (per source; DEFAULT_WEBHOOK_LIMIT
    unless RATE_LIMITS names one); so do WebSocket upgrades (DEFAULT_UPGRADE_LIMIT)."""
    if websocket:
        return "upgrade"
    if path.startswith(PROVIDER_CALLBACKS):
        return "webhook"
    return "read" if method in ("GET", "HEAD") else "write"


def client_key(authorization: str | None, ip: str, jwt_key: str | None) -> str:
    """The user id of a bearer token the gateway verified (with JWT_KEY), else the client's
    address: signed-in users share no bucket with their neighbours, and a forged token buys
    neither a fresh budget nor a victim's."""
    token = bearer_token(authorization)
    if token and jwt_key:
        try:
            user_id = verify_token(jwt_key, token).userId
        except TokenError:
            user_id = None
        if isinstance(user_id, str) and _USER_ID.match(user_id):
            return f"user:{user_id}"
    return f"ip:{ip}"
