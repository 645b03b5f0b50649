"""Cloudflare's `asgi` module for Python Workers: `await asgi.fetch(app, request, env)` serves a
request through an ASGI app (FastAPI, Quart, …), with the worker's env in `scope["env"]`."""
from durable.compat.asgi import fetch

__all__ = ["fetch"]
