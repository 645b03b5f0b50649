"""/uploads/<name>: product images stored by `images.save_upload`."""
from __future__ import annotations

from typing import Any

from quart import Blueprint, send_from_directory

from models.web import documents_file

from ..images import uploads_dir

bp = Blueprint("uploads", __name__)


# an image is only ever an image: no sniffing it into HTML, no scripts, no inline rendering tricks
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cross-Origin-Resource-Policy": "cross-origin"}


@bp.get("/uploads/<name>")
@documents_file("image/*")
async def image(name: str) -> Any:
    response = await send_from_directory(uploads_dir(), name)  # safe_join: no path traversal
    response.headers.update(SAFE_HEADERS)
    response.headers["Content-Disposition"] = f'inline; filename="{name}"'  # our own random hex name
    return response
