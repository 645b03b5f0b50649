"""Product images go to the image service (`IMAGE_SERVICE`), which checks them by decoding them
and keeps them in the R2 bucket every node shares; base only bounds their size and asks."""
from __future__ import annotations

import logging
from typing import Any

from durable import env
from web.errors import ApiError
from web.service_auth import CALLER_HEADER, signer

MAX_BYTES = 5 * 1024 * 1024
SERVICE = "rest-shop-api"  # how base names itself to the image service
log = logging.getLogger("rest_shop.images")


def read_upload(upload: Any) -> bytes:
    """The file's bytes, or a 413 (never more than the limit read)."""
    data = upload.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ApiError(413, "payload_too_large", "productImage is larger than 5 MB")
    return data


async def _call(method: str, path: str, body: bytes = b"") -> Any:
    headers = {CALLER_HEADER: SERVICE, **({"content-type": "application/octet-stream"} if body else {})}
    return await env.IMAGE_SERVICE.fetch(f"http://images{path}", method=method, body=body or None, headers=headers,
                                         sign=signer(method, path, body, covering=(CALLER_HEADER,)))


async def store_upload(data: bytes) -> str:
    """Store an image; the `/uploads/…` path it is served at. The image service's refusal (413,
    415) is passed on as it came; its absence is a 503 to retry."""
    reply = await _call("POST", "/images", data)
    try:
        body = await reply.json()
    except ValueError:
        body = None
    if reply.status == 201 and isinstance(body, dict):
        return str(body["path"])
    if reply.status in (413, 415) and isinstance(body, dict) and "error" in body:
        raise ApiError(reply.status, body["error"]["code"], body["error"]["message"])
    raise ApiError(503, "images_unavailable", "The image service is unavailable; try again shortly",
                   headers={"Retry-After": reply.headers.get("Retry-After") or "1"})


async def discard_upload(path: str) -> None:
    """Remove a stored image whose product was never written (no orphans). Best effort: the
    product's own error is what the client must see, not this one's."""
    try:
        reply = await _call("DELETE", "/images/" + path.removeprefix("/uploads/"))
        if reply.status >= 300:
            log.warning("image %s was not discarded: %s", path, reply.status)
    except Exception:
        log.warning("image %s was not discarded", path, exc_info=True)
