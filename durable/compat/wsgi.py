"""`workers.wsgi.fetch(app, request, env)`: a WSGI app (Django, Flask) as a Python Worker's fetch
handler. The app runs in a thread of the default pool (it blocks, the event loop must not), with
the worker's loop lent to that thread, so `pyodide.ffi.run_sync(awaitable)` inside it waits on
the worker's bindings; the worker's env is in `environ["workers.env"]`."""
from __future__ import annotations

import asyncio
import contextvars
import io
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from ..http import Request, Response
from .ffi import lend_loop

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ_for(request: Request, env: Any = None) -> dict[str, Any]:
    """The PEP 3333 environ of `request`."""
    parts = urlsplit(request.url)
    https = parts.scheme == "https"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method, "SCRIPT_NAME": "", "PATH_INFO": unquote(parts.path, encoding="latin-1") or "/",  # PEP 3333: bytes as latin-1
        "QUERY_STRING": parts.query, "SERVER_NAME": parts.hostname or "localhost",
        "SERVER_PORT": str(parts.port or (443 if https else 80)), "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.headers.get("cf-connecting-ip", "127.0.0.1"),
        "wsgi.version": (1, 0), "wsgi.url_scheme": "https" if https else "http",
        "wsgi.input": io.BytesIO(request.body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "workers.env": env,
        "CONTENT_LENGTH": str(len(request.body)) if request.body else "",
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            environ[f"HTTP_{key}"] = f"{environ[f'HTTP_{key}']},{value}" if f"HTTP_{key}" in environ else value
    return environ


def _call(app: WSGIApp, environ: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Response:
    """Run the app to its last byte in this (pool) thread; its answer as one Response."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started.update(status=status, headers=headers)
        return chunks.append  # the legacy write() callable

    chunks: list[bytes] = []
    lend_loop(threading.get_ident(), loop)
    try:
        result = app(environ, start_response)
        try:
            for chunk in result:
                if chunk:
                    chunks.append(bytes(chunk))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    finally:
        lend_loop(threading.get_ident(), None)
    if not started:
        raise RuntimeError("the WSGI app returned without calling start_response")
    code, _, reason = started["status"].partition(" ")
    return Response(b"".join(chunks), status=int(code), headers=started["headers"], status_text=reason)


async def fetch(app: WSGIApp, request: Request, env: Any = None, ctx: Any = None) -> Response:
    """The app's answer to `request`; its code sees the request's context (`from workers import env`)."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return await loop.run_in_executor(None, context.run, _call, app, environ_for(request, env), loop)
