"""What the image service keeps in its R2 bucket, and under which keys.

Originals: `uploads/<32 hex>.<jpg|png|webp>`, served at `/uploads/<name>` (the URL products carry).
Variants: `variants/<source name>/<digest>`, the digest of the source's key and the canonical
options with the format resolved, so a variant is made once, and a source's variants go with it.
A source is never rewritten under its name (an upload gets a new random one), so a kept variant
is answered without reading its source.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from durable.r2 import R2Bucket, R2Object

from .options import Transform, TransformError
from .render import MEDIA_TYPES, SUFFIXES, Probe

log = logging.getLogger("rest_shop.images")

ORIGINAL = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp)$")
SUFFIX_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
IMMUTABLE = "public, max-age=31536000, immutable"  # names are random and never reused: nothing changes under one


def original_key(name: str) -> str | None:
    """The bucket key of `/uploads/<name>`, or None when no upload could have that name."""
    return f"uploads/{name}" if ORIGINAL.match(name) else None


def variant_key(source: str, transform: Transform) -> str:
    digest = hashlib.sha256(f"{source}\0{transform.canonical()}".encode()).hexdigest()[:40]
    return f"{_variants_of(source)}{digest}"


def _variants_of(source: str) -> str:
    return f"variants/{source.removeprefix('uploads/')}/"


async def delete_source(bucket: R2Bucket, source: str) -> None:
    """An original and every variant made of it."""
    await bucket.delete(source)
    while True:
        page = await bucket.list(prefix=_variants_of(source))
        if not page.objects:
            return
        await bucket.delete([found.key for found in page.objects])


async def save_original(bucket: R2Bucket, data: bytes, probe: Probe) -> str:
    """Store a checked upload under a new random name; its `/uploads/…` path."""
    name = f"{secrets.token_hex(16)}.{SUFFIXES[probe.format]}"
    await bucket.put(f"uploads/{name}", data, httpMetadata={"contentType": MEDIA_TYPES[probe.format],
                                                             "cacheControl": IMMUTABLE},
                     customMetadata={"width": str(probe.width), "height": str(probe.height),
                                     "alpha": "1" if probe.has_alpha else "0"})
    return f"/uploads/{name}"


async def save_variant(bucket: R2Bucket, key: str, data: bytes, media_type: str, source: str) -> R2Object:
    stored = await bucket.put(key, data, httpMetadata={"contentType": media_type, "cacheControl": IMMUTABLE},
                              customMetadata={"source": source})
    assert stored is not None  # an unconditional put always lands
    return stored


async def migrate_legacy(bucket: R2Bucket, folder: Path, check: Callable[[bytes], Awaitable[tuple[Probe, bytes]]]) -> int:
    """Copy uploads kept on disk before the bucket existed into it, under the same names (so
    their URLs keep working), each checked and cleaned as an upload is (`check`: the pool's
    `probe`); idempotent, and safe on nodes sharing the folder: a name already in the bucket is
    left alone (a create-only write)."""
    if not folder.is_dir():
        return 0
    moved = 0
    for path in sorted(await asyncio.to_thread(lambda: list(folder.iterdir()))):
        key = original_key(path.name)
        if key is None or await bucket.head(key) is not None:
            continue
        try:
            found, data = await check(await asyncio.to_thread(path.read_bytes))
        except TransformError as exc:
            log.warning("upload %s was not moved into the bucket: %s", path, exc.message)
            continue
        stored = await bucket.put(key, data, onlyIf={"etagDoesNotMatch": "*"},
                                  httpMetadata={"contentType": SUFFIX_TYPES[path.suffix[1:]], "cacheControl": IMMUTABLE},
                                  customMetadata={"width": str(found.width), "height": str(found.height),
                                                  "alpha": "1" if found.has_alpha else "0"})
        moved += stored is not None
    if moved:
        log.info("moved %d upload(s) from %s into the bucket", moved, folder)
    return moved


def headers_of(found: R2Object, **extra: Any) -> dict[str, str]:
    """An answer's headers for a stored image: its type, caching and etag."""
    headers: dict[str, str] = {}
    found.writeHttpMetadata(headers)
    headers["ETag"] = found.httpEtag
    headers.setdefault("cache-control", IMMUTABLE)
    headers.update({k: str(v) for k, v in extra.items()})
    return headers
