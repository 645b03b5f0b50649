"""rest-shop-images: product images in an R2 bucket every node shares, resized and re-encoded
on request in Cloudflare's URL format (`/cdn-cgi/image/<options>/<source>`).

The worker's entry module: the Quart `app` and its Durable Object class.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from quart import Quart

from durable import env
from web.docs import install_schema
from web.errors import install_error_handlers
from web.health import liveness
from web.service_auth import install_service_auth, key_problems, require_strong_keys

from . import library, routes
from .objects import VariantBudget
from .render import Probe, probe

__all__ = ["VariantBudget", "app"]


app = Quart(__name__)
app.config["MAX_CONTENT_LENGTH"] = 6 * 1024 * 1024  # an upload (5 MiB) and its envelope
install_schema(app, "rest-shop-images")
install_error_handlers(app)
install_service_auth(app)
app.register_blueprint(routes.bp)
app.register_blueprint(liveness())


def startup_problems(worker_env: Any) -> list[str]:
    """What would stop this worker in production (`wrangler serve` lists them all before starting)."""
    return key_problems(worker_env, ("SERVICE_AUTH_KEY",))


def legacy_folder() -> Path:
    """Where base kept uploads before the bucket: LEGACY_UPLOADS_DIR, else base's default folder
    (base's state layout, known here only for this one-way move: drop it once no host has one)."""
    configured = str(env.get("LEGACY_UPLOADS_DIR", "") or "").strip()
    return Path(configured) if configured else env.state_dir.parent / "rest-shop-api" / "uploads"


@app.before_serving
async def start() -> None:
    require_strong_keys(("SERVICE_AUTH_KEY",))
    # uploads kept on disk (LEGACY_UPLOADS_DIR) move into the bucket (in the background: the
    # worker serves meanwhile; a name not moved yet is a 404 for a moment, never a wrong image)
    max_pixels = routes.limits()["MAX_SOURCE_PIXELS"]
    resize = routes.pool()

    async def check(data: bytes) -> tuple[Probe, bytes]:  # as an upload is: decoded whole, its metadata out
        return await resize.run(probe, data, max_pixels)
    env.isolate_state("migration", lambda: asyncio.get_running_loop().create_task(
        library.migrate_legacy(env.IMAGES, legacy_folder(), check)))


@app.after_serving
async def stop() -> None:
    task = env.isolate_state("migration", lambda: None)
    if task is not None and not task.done():
        task.cancel()
    routes.pool().close()
    check = env.isolate_state("bucket_check", lambda: None)
    if check is not None:
        check.close()
