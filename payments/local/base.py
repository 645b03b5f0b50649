"""What every local provider server shares: an aiohttp app on 127.0.0.1, a ledger of money
moved, fault injection, and event delivery (with retries) back to the service.

Controls under `/_local/`: `GET ledger`, `POST faults {delay_s, status, count, path?}`,
`POST events/{id}/deliver {delay_s?, age_s?}` (duplicates, late or stale deliveries).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import aiohttp
from aiohttp import web

from durable.dev.local_servers import serve_locally

log = logging.getLogger("rest_shop.local_providers")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class LocalProviderServer:
    """Subclasses add their API routes in `routes()` and their delivery format in `deliver_event()`."""
    title = "provider"

    api_prefix = "/v1/"

    def __init__(self) -> None:
        self.ledger: list[dict[str, Any]] = []      # {"type": "charge"|"refund", "amount", "currency", "payment_id"}
        self.events: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, int | None] = {}  # event id → status of its latest automatic delivery
        self.faults: dict[str, Any] = {"delay_s": 0.0, "status": None, "count": 0}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None
        self.url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def deliver_event(self, event: dict[str, Any], *, age_s: int = 0) -> int | None:
        """Send one event to the service once; the HTTP status, or None if unreachable."""
        raise NotImplementedError

    def middlewares(self) -> list[Any]:
        """Provider-specific middlewares (auth, idempotency), run after fault injection."""
        return []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_middleware, *self.middlewares()])
        self.routes(app)
        app.router.add_get("/_local/ledger", self._ledger)
        app.router.add_post("/_local/faults", self._set_faults)
        app.router.add_post("/_local/events/{id}/deliver", self._redeliver)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner, self.url = await serve_locally(self.app(), host, port)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.http is not None:
            await self.http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def record(self, kind: str, amount: int, currency: str, payment_id: str | None, **extra: Any) -> None:
        self.ledger.append({"type": kind, "amount": amount, "currency": currency, "payment_id": payment_id, **extra})

    def emit(self, event_id: str, event: dict[str, Any]) -> None:
        """Keep the event and deliver it in the background, retrying with backoff on failure."""
        self.events[event_id] = event

        async def deliver() -> None:
            for attempt in range(4):  # as providers do: a 2xx ends it, so does a refusal that will not change
                status = await self.deliver_event(event)
                self.deliveries[event_id] = status
                if status is not None and status < 500 and status not in (409, 429):
                    return
                await asyncio.sleep(0.2 * 2 ** attempt)
        task = asyncio.get_running_loop().create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def quiesce(self) -> None:
        """Wait until every background delivery (and the work it triggered) has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def post(self, url: str, payload: bytes, headers: dict[str, str]) -> int | None:
        assert self.http is not None
        try:
            async with self.http.post(url, data=payload, headers=headers) as resp:
                return resp.status
        except aiohttp.ClientError as exc:
            log.info("event delivery to %s failed: %s", url, exc)
            return None

    @web.middleware
    async def _faults_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if (request.path.startswith("/_local/") or self.faults["count"] <= 0
                or not request.path.startswith(self.faults.get("path") or "/")):
            return await handler(request)
        self.faults["count"] -= 1
        if self.faults["status"]:
            return self.fault_response(int(self.faults["status"]))
        response = await handler(request)  # a slow reply: the work is done, the answer comes late
        if self.faults["delay_s"]:
            await asyncio.sleep(self.faults["delay_s"])
        return response

    def fault_response(self, status: int) -> web.Response:
        """An injected failure, in the provider's own error shape."""
        return web.json_response({"error": "simulated provider failure"}, status=status)

    async def _ledger(self, request: web.Request) -> web.Response:
        return web.json_response({"ledger": self.ledger, "events": list(self.events)})

    async def _set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.faults = {"delay_s": float(body.get("delay_s", 0)), "status": body.get("status"),
                       "count": int(body.get("count", 1)), "path": str(body.get("path") or "/")}
        return web.json_response(self.faults)

    async def _redeliver(self, request: web.Request) -> web.Response:
        event = self.events.get(request.match_info["id"])
        if event is None:
            return web.json_response({"error": "no such event"}, status=404)
        body = await request.json() if request.can_read_body else {}
        await asyncio.sleep(float(body.get("delay_s", 0)))
        return web.json_response({"delivered": await self.deliver_event(event, age_s=int(body.get("age_s", 0)))})
