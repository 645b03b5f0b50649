"""Where a shopper may be sent back after approving a payment (the API is no open redirect).
The shop's own URL is `durable.public_url`."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from durable.public_url import public_base_url


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_return_origins(env: Any) -> set[str]:
    """Where a shopper may be sent back after approving a payment: our own origin plus
    RETURN_URL_ORIGINS (the storefronts), so the API is no open redirect."""
    listed = [o.strip() for o in str(env.get("RETURN_URL_ORIGINS", "")).split(",") if o.strip()]
    return {_origin(public_base_url(env)), *(_origin(o) for o in listed)}


def is_allowed_return(env: Any, url: str) -> bool:
    return _origin(url) in allowed_return_origins(env)
