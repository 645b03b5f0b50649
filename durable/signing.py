"""HMAC-SHA256 request signatures between workers, so a shared key never travels on the wire.

`t=<unix seconds>,v1=<hex>` over the method, the path with its query, the timestamp and a
SHA-256 of the body (Stripe's header shape). A signature older than the tolerance is stale.
"""
from __future__ import annotations

import hashlib
import hmac
import time


class SignatureError(Exception):
    """Missing, malformed, stale or forged; the message says which (never the expected value)."""


def _mac(key: str, method: str, target: str, timestamp: int, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    message = f"{method.upper()}\n{target}\n{timestamp}\n{digest}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(key: str, method: str, target: str, body: bytes = b"", *, timestamp: int | None = None) -> str:
    """The header value for a request to `target` (path plus `?query`, as sent)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},v1={_mac(key, method, target, stamp, body)}"


def verify(key: str, header: str | None, method: str, target: str, body: bytes = b"", *,
           tolerance_s: float = 60.0, now: float | None = None) -> None:
    if not header:
        raise SignatureError("unsigned request")
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        stamp = int(fields["t"])
        given = fields["v1"]
    except (ValueError, KeyError):
        raise SignatureError("malformed signature") from None
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        raise SignatureError("stale signature")
    if not hmac.compare_digest(given.encode(), _mac(key, method, target, stamp, body).encode()):
        raise SignatureError("signature does not match")
