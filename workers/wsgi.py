"""`from workers import wsgi`: `await wsgi.fetch(app, request, env)` serves a WSGI app (Django, Flask)."""
from durable.compat.wsgi import environ_for, fetch

__all__ = ["environ_for", "fetch"]
