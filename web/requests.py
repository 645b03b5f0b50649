"""What a service reads from a request beyond its body: the client's address (as the gateway
signed it) and the Idempotency-Key, checked as the document says."""
from __future__ import annotations

import re

from quart import g, request

from .errors import ApiError
from .openapi import IDEMPOTENCY_KEY_PATTERN


def client_ip() -> str:
    """The address the gateway resolved and signed (see `service_auth`), else the socket peer:
    a service never believes a client-sent forwarding header."""
    return getattr(g, "client_ip", None) or request.remote_addr or ""


IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)  # what the document says


def idempotency_key(*, required: bool) -> str | None:
    """The request's Idempotency-Key, checked as documented (400 when missing and required)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        if required:
            raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (1 to 255 characters)")
        return None
    if not IDEMPOTENCY_KEY.match(raw):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is 1 to 255 printable ASCII characters")
    return raw
