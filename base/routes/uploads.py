"""/uploads/<name>: product images stored by `images.save_upload`."""
from __future__ import annotations

from typing import Any

from quart import Blueprint, send_from_directory

from ..images import uploads_dir

bp = Blueprint("uploads", __name__)


@bp.get("/uploads/<name>")
async def image(name: str) -> Any:
    return await send_from_directory(uploads_dir(), name)  # safe_join: no path traversal
