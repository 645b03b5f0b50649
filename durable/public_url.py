"""The URL the outside world is given for this deployment (provider callbacks, sign-in and
payment redirects) comes from configuration, never from a request: a client controls its `Host`.

`PUBLIC_BASE_URL` is where the shop is reached from the internet (the gateway, or the proxy in
front of it). `wrangler dev` fills an empty one with the session's primary URL; outside
development it must be `https://`, and a worker that needs it refuses to start without one.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .config import is_development
from .errors import StartupRefused


class BadPublicUrl(StartupRefused):
    """PUBLIC_BASE_URL is missing or malformed (or not https in production)."""


def public_base_url(env: Any) -> str:
    """The configured base URL, checked: absolute http(s), no query or fragment; https outside dev."""
    raw = str(env.get("PUBLIC_BASE_URL", "") or "").strip().rstrip("/")
    if not raw:
        raise BadPublicUrl("PUBLIC_BASE_URL is not set: set it to the https:// address the shop is reached at "
                           "(provider callbacks and redirects are built from it)")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise BadPublicUrl(f"PUBLIC_BASE_URL {raw!r} is not an absolute http(s) URL without query or fragment")
    if parts.scheme != "https" and not is_development(env):
        raise BadPublicUrl(f"PUBLIC_BASE_URL {raw!r} must be https:// outside development")
    return raw


def url_problems(env: Any) -> list[str]:
    try:
        public_base_url(env)
    except BadPublicUrl as exc:
        return [str(exc)]
    return []
