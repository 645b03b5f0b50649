"""`asgi.fetch(app, request, env)`: a FastAPI, Quart or any ASGI app as a Cloudflare Python
Worker's fetch handler; the app finds the worker's env in `request.scope["env"]`."""
from __future__ import annotations

from typing import Any

from ..asgi import ASGIApp, asgi_fetch
from ..http import Request, Response


async def fetch(app: ASGIApp, request: Request, env: Any, ctx: Any = None) -> Response:
    return await asgi_fetch(app, request, extra_scope={"env": env, "ctx": ctx})
