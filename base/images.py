"""Product images: JPEG/PNG up to 5 MB, checked by content, stored under the uploads directory
(UPLOADS_DIR, else the worker's local state directory: never the source tree)."""
from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from durable import env
from models.errors import ApiError

MAX_BYTES = 5 * 1024 * 1024
SIGNATURES = {b"\xff\xd8\xff": ".jpg", b"\x89PNG\r\n\x1a\n": ".png"}


def uploads_dir() -> Path:
    configured = str(env.get("UPLOADS_DIR", "") or "").strip()
    return Path(configured).resolve() if configured else env.state_dir / "uploads"


def read_upload(upload: Any) -> tuple[bytes, str]:
    """The file's bytes and our extension for it, or the 4xx that says why not (nothing written)."""
    data = upload.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ApiError(413, "payload_too_large", "productImage is larger than 5 MB")
    suffix = next((ext for magic, ext in SIGNATURES.items() if data.startswith(magic)), None)
    if suffix is None:
        raise ApiError(415, "unsupported_media_type", "productImage must be a JPEG or PNG image")
    return data, suffix


async def store_upload(data: bytes, suffix: str) -> str:
    """Store a checked image under a random name; return the path it is served at."""
    name = secrets.token_hex(16) + suffix
    directory = uploads_dir()
    await asyncio.to_thread(lambda: (directory.mkdir(parents=True, exist_ok=True), (directory / name).write_bytes(data)))
    return f"/uploads/{name}"


async def discard_upload(path: str) -> None:
    """Remove a stored image whose product was never written (no orphans)."""
    target = uploads_dir() / path.removeprefix("/uploads/")
    await asyncio.to_thread(lambda: target.unlink(missing_ok=True))
