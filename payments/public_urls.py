"""The URLs the outside world is given (provider callbacks, webhook registrations, shopper
redirects) come from configuration, never from a request: a client controls its `Host`.

`PUBLIC_BASE_URL` is where the shop is reached from the internet (the gateway, or the proxy in
front of it). `wrangler dev` fills an empty one with the session's primary URL; production
requires an `https://` URL and refuses to start without one.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from durable.errors import StartupRefused


class BadPublicUrl(StartupRefused):
    """PUBLIC_BASE_URL is missing or malformed (or not https in production)."""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def public_base_url(env: Any) -> str:
    """The configured base URL, checked: absolute http(s), no query or fragment; https outside dev."""
    raw = str(env.get("PUBLIC_BASE_URL", "") or "").strip().rstrip("/")
    if not raw:
        raise BadPublicUrl("PUBLIC_BASE_URL is not set: set it to the https:// address the shop is reached at "
                           "(provider callbacks and redirects are built from it)")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise BadPublicUrl(f"PUBLIC_BASE_URL {raw!r} is not an absolute http(s) URL without query or fragment")
    if parts.scheme != "https" and str(env.get("ENVIRONMENT", "development")) != "development":
        raise BadPublicUrl(f"PUBLIC_BASE_URL {raw!r} must be https:// outside development")
    return raw


def url_problems(env: Any) -> list[str]:
    try:
        public_base_url(env)
    except BadPublicUrl as exc:
        return [str(exc)]
    return []


def allowed_return_origins(env: Any) -> set[str]:
    """Where a shopper may be sent back after approving a payment: our own origin plus
    RETURN_URL_ORIGINS (the storefronts), so the API is no open redirect."""
    listed = [o.strip() for o in str(env.get("RETURN_URL_ORIGINS", "")).split(",") if o.strip()]
    return {_origin(public_base_url(env)), *(_origin(o) for o in listed)}


def is_allowed_return(env: Any, url: str) -> bool:
    return _origin(url) in allowed_return_origins(env)
