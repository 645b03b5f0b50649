"""The dashboard's HTTP side, on the operator listener (beside the tail API and /metrics, never
a worker's public one): the page and its files, and the JSON views it polls. All of it reads;
nothing here changes a worker, an object or the cluster."""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pymongo.errors import PyMongoError

from ..tail import TailFilters, cli_filters_to_api
from ..tail_api import stream_tail
from . import objects, views
from .series import Sampler, Totals, read_totals

PREFIX = "/dashboard"
STATIC = Path(__file__).with_name("static")
FILES = {"index.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css",
         "favicon.svg": "image/svg+xml"}
QUERY_BYTES = 10_000
COOKIE = "durable_dashboard"
UNCLAIMED_TAIL_S = 30.0  # a tail the page opened but never read from is closed after this
# the page runs only its own files and talks only to this listener (its views and the tail API)
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                               "base-uri 'none'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _local_host(host: str) -> bool:
    """The Host a browser sent names this machine by address or as localhost: a page on another
    site that re-points its own name at 127.0.0.1 (DNS rebinding) cannot read the views."""
    name = host[1:host.find("]")] if host.startswith("[") else host.split(":")[0]
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, default=str))


def _problem(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Dashboard:
    """With `token` (production), a browser signs in once with `/dashboard/?token=…` (an HttpOnly,
    SameSite=Strict cookie follows, holding a MAC of the token, named for the port) and a script
    with `Authorization: Bearer`. Without (dev), the listener answers only a Host that is an
    address or localhost (no DNS rebinding), and the dashboard only this machine."""

    def __init__(self, runtime: Any, urls: dict[str, str], token: str | None = None) -> None:
        self.runtime = runtime
        self.urls = urls
        self.token = token
        self.cookie = None if token is None else hmac.new(token.encode(), b"durable dashboard cookie",
                                                          "sha256").hexdigest()
        self.sampler = Sampler(runtime.workers, self.totals)
        self._unclaimed: set[str] = set()

    def totals(self) -> dict[str, Totals]:
        return read_totals({name: worker.meter for name, worker in self.runtime.workers.items()})

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is None and not _local_host(request.host):  # the whole dev listener (the tail API too)
            return _problem(403, "this listener answers only to this machine's addresses and localhost")
        if not request.path.startswith(PREFIX):
            return await handler(request)
        cookie = f"{COOKIE}_{request.url.port or 0}"  # cookies are not kept apart by port: the name is
        if self.token is None:
            if not _loopback(request.remote):
                return _problem(403, "a dev dashboard answers only to this machine (wrangler serve "
                                     "--dashboard-port serves one behind a token)")
        elif _same(request.query.get("token", ""), self.token):
            signed_in = web.HTTPSeeOther(request.path)  # the token leaves the address bar and the history
            signed_in.set_cookie(cookie, self.cookie, httponly=True, samesite="Strict", path=PREFIX,
                                 secure=request.secure)
            raise signed_in
        elif not (_same(request.cookies.get(cookie, ""), self.cookie or "")
                  or _same(request.headers.get("Authorization", "").removeprefix("Bearer ").strip(), self.token)):
            return _problem(401, "sign in: open /dashboard/?token=<DASHBOARD_TOKEN> once, "
                                 "or send Authorization: Bearer <DASHBOARD_TOKEN>")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def page(self, request: web.Request) -> web.StreamResponse:
        return await self.file(request, "index.html")

    async def file(self, request: web.Request, name: str | None = None) -> web.StreamResponse:
        name = name or request.match_info["name"]
        if name not in FILES:
            return _problem(404, "no such file")
        return web.Response(body=(STATIC / name).read_bytes(), content_type=FILES[name],
                            charset="utf-8" if FILES[name].startswith("text") else None)

    async def overview(self, request: web.Request) -> web.Response:
        return _json(views.overview(self.runtime, self.urls, self.totals()))

    async def series(self, request: web.Request) -> web.Response:
        return _json({"stepS": self.sampler.step_s, "workers": self.sampler.series()})

    async def cluster(self, request: web.Request) -> web.Response:
        return _json(await views.cluster(self.runtime))  # (a lease table it cannot read is said in the view)

    async def schedules(self, request: web.Request) -> web.Response:
        return _json(await views.schedules(self.runtime))

    async def object(self, request: web.Request) -> web.Response:
        worker, class_name, key = (request.query.get(k, "") for k in ("worker", "class", "key"))
        if not (worker and class_name and key):
            return _problem(400, "give worker, class and key (an object's name or its 64-hex id)")
        try:
            return _json(await objects.inspect(self.runtime, worker, class_name, key))
        except objects.NotFound as exc:
            return _problem(404, str(exc))
        except PyMongoError as exc:  # the object's storage is away: say so, retryably
            answer = _problem(503, f"the object's storage did not answer: {type(exc).__name__}")
            answer.headers["Retry-After"] = "2"
            return answer

    async def sql(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":  # a cross-site form cannot send it without a preflight
            return _problem(415, "send application/json")
        try:
            body = await request.json()
            args = [str(body[k]) for k in ("worker", "class", "key", "query")]
        except (ValueError, KeyError, TypeError):
            return _problem(400, "give worker, class, key and query as JSON")
        if len(args[3]) > QUERY_BYTES:
            return _problem(413, f"a query is at most {QUERY_BYTES} characters")
        try:
            return _json(await objects.sql_query(self.runtime, *args))
        except objects.NotFound as exc:
            return _problem(404, str(exc))
        except Exception as exc:  # sqlite3's errors: a bad query, or a write refused by the read-only connection
            return _problem(400, f"{type(exc).__name__}: {exc}")


    async def tails(self, request: web.Request) -> web.Response:
        """Open one tail per worker (all, or `workers`) with `wrangler tail`'s filters (status,
        method, search, sampling rate); the page reads each at its /tail/<id> WebSocket."""
        if request.content_type != "application/json":
            return _problem(415, "send application/json")
        try:
            body = await request.json()
            rate = body.get("samplingRate")
            api = cli_filters_to_api(status=body.get("status") or None, method=body.get("method") or None,
                                     search=body.get("search") or None,
                                     sampling_rate=float(rate) if rate not in (None, "") else None)
            filters = TailFilters.from_api(api, request.remote)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _problem(400, f"bad tail filters: {exc}")
        wanted = body.get("workers") or list(self.runtime.workers)
        if not (isinstance(wanted, list) and all(isinstance(w, str) and w in self.runtime.workers for w in wanted)):
            return _problem(400, f"workers: some of {sorted(self.runtime.workers)}")
        sessions = [self.runtime.hub.create(script, filters) for script in dict.fromkeys(wanted)]
        for session in sessions:
            self._unclaimed.add(session.id)
            asyncio.get_running_loop().call_later(UNCLAIMED_TAIL_S, self._close_unclaimed, session.id)
        # a path: the page makes it ws:// or wss:// as it was itself served (behind a TLS proxy too)
        return _json({"tails": [{"worker": s.script_name, "id": s.id, "path": f"{PREFIX}/tail/{s.id}"}
                                for s in sessions]})

    def _close_unclaimed(self, tail_id: str) -> None:
        if tail_id in self._unclaimed:
            self._unclaimed.discard(tail_id)
            self.runtime.hub.delete(tail_id)

    async def tail(self, request: web.Request) -> web.StreamResponse:
        """The events of a tail this page opened (behind the dashboard's own sign-in)."""
        tail_id = request.match_info["tail_id"]
        if tail_id not in self._unclaimed:
            return _problem(404, "no such tail, or it is being read already")
        if request.headers.get("Upgrade", "").lower() != "websocket":  # a plain GET must not claim it
            return _problem(400, "read a tail over a WebSocket (subprotocol trace-v1)")
        self._unclaimed.discard(tail_id)
        return await stream_tail(self.runtime.hub, request, tail_id)


def add_dashboard(app: web.Application, runtime: Any, urls: dict[str, str], token: str | None = None) -> Dashboard:
    """Serve the dashboard at /dashboard/ on `app` (before it starts); its sampler runs with the app."""
    board = Dashboard(runtime, urls, token)
    app.middlewares.append(board.guard)
    app.router.add_get(PREFIX, lambda request: _redirect())
    app.router.add_get(PREFIX + "/", board.page)
    app.router.add_get(PREFIX + "/static/{name}", board.file)
    for name in ("overview", "series", "cluster", "schedules", "object"):
        app.router.add_get(f"{PREFIX}/api/{name}", getattr(board, name))
    app.router.add_post(PREFIX + "/api/sql", board.sql)
    app.router.add_post(PREFIX + "/api/tails", board.tails)
    app.router.add_get(PREFIX + "/tail/{tail_id}", board.tail)

    async def sampling(_: web.Application) -> Any:
        board.sampler.start()
        yield
        await board.sampler.stop()
    app.cleanup_ctx.append(sampling)
    return board


async def _redirect() -> web.Response:
    raise web.HTTPFound(PREFIX + "/")
