"""A local Stripe: the subset of Stripe's HTTP API that rest-shop uses, for dev and tests.

The official `stripe` library talks to it unchanged (form-encoded requests, `Idempotency-Key`,
Stripe's JSON objects and error shapes). It keeps a ledger of charges and refunds, registers
webhook endpoints (`POST /v1/webhook_endpoints` returns the signing secret, as Stripe does) and
delivers signed events. Test payment methods: `pm_card_visa` succeeds, `pm_card_chargeDeclined`
and `pm_card_chargeDeclinedInsufficientFunds` are declined.
Controls under `/_local/`: the ledger, fault injection (delay, 5xx), event (re)delivery.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("rest_shop.local_stripe")

DECLINES = {"pm_card_chargeDeclined": ("card_declined", "generic_decline"),
            "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds")}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _error(status: int, type_: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message, **extra}}, status=status)


class LocalStripe:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.intents: dict[str, dict[str, Any]] = {}
        self.ledger: list[dict[str, Any]] = []          # {"type": "charge"|"refund", "payment_intent", "amount"}
        self.events: dict[str, dict[str, Any]] = {}
        self.endpoints: list[dict[str, Any]] = []
        self.faults: dict[str, Any] = {"delay_s": 0.0, "status": None, "count": 0}
        self._idempotency: dict[str, tuple[str, int, bytes]] = {}
        self._in_progress: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/payment_intents", self.create_intent)
        app.router.add_get("/v1/payment_intents/{id}", self.get_intent)
        app.router.add_post("/v1/payment_intents/{id}/confirm", self.confirm_intent)
        app.router.add_post("/v1/refunds", self.create_refund)
        app.router.add_post("/v1/webhook_endpoints", self.create_endpoint)
        app.router.add_get("/v1/balance", self.balance)
        app.router.add_get("/_local/ledger", self.get_ledger)
        app.router.add_post("/_local/faults", self.set_faults)
        app.router.add_post("/_local/events/{id}/deliver", self.redeliver)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- middleware: auth, faults, idempotency ---------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided")
        if self.faults["count"] > 0:
            self.faults["count"] -= 1
            if self.faults["delay_s"]:
                await asyncio.sleep(self.faults["delay_s"])
            if self.faults["status"]:
                return _error(int(self.faults["status"]), "api_error", "Simulated Stripe failure")
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key:
            return await handler(request)
        form = await request.post()
        fingerprint = hashlib.sha256(f"{request.path}?{sorted(form.items())}".encode()).hexdigest()
        if key in self._idempotency:
            seen_fingerprint, status, body = self._idempotency[key]
            if seen_fingerprint != fingerprint:
                return _error(400, "idempotency_error", "Keys for idempotent requests can only be used with the "
                                                         "same parameters they were first used with.")
            return web.Response(body=body, status=status, content_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
        if key in self._in_progress:
            return _error(409, "idempotency_error", "There is currently another in-progress request using this "
                                                    "Idempotency Key.", code="idempotency_key_in_use")
        self._in_progress.add(key)
        try:
            response = await handler(request)
        finally:
            self._in_progress.discard(key)
        if response.status < 500:
            self._idempotency[key] = (fingerprint, response.status, response.body)  # type: ignore[attr-defined]
        return response

    # -- API ------------------------------------------------------------------------------
    async def create_intent(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            amount = int(form["amount"])
            currency = str(form["currency"]).lower()
        except (KeyError, ValueError):
            return _error(400, "invalid_request_error", "Missing required param: amount or currency.")
        if amount < 1:
            return _error(400, "invalid_request_error", "Amount must be at least 1.", param="amount")
        intent = {"id": _id("pi"), "object": "payment_intent", "amount": amount, "currency": currency,
                  "amount_received": 0, "amount_refunded": 0, "status": "requires_payment_method",
                  "payment_method": form.get("payment_method"), "created": int(time.time()),
                  "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
                  "last_payment_error": None, "livemode": False}
        intent["client_secret"] = f"{intent['id']}_secret_{secrets.token_hex(8)}"
        if intent["payment_method"]:
            intent["status"] = "requires_confirmation"
        self.intents[intent["id"]] = intent
        if form.get("confirm") == "true" and intent["payment_method"]:
            return self._confirm(intent, str(intent["payment_method"]))
        return web.json_response(intent)

    async def get_intent(self, request: web.Request) -> web.Response:
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return _error(404, "invalid_request_error", "No such payment_intent", code="resource_missing")
        return web.json_response(intent)

    async def confirm_intent(self, request: web.Request) -> web.Response:
        intent = self.intents.get(request.match_info["id"])
        if intent is None:
            return _error(404, "invalid_request_error", "No such payment_intent", code="resource_missing")
        form = await request.post()
        method = str(form.get("payment_method") or intent.get("payment_method") or "")
        if intent["status"] == "succeeded":
            return _error(400, "invalid_request_error", "This PaymentIntent has already succeeded.",
                          code="payment_intent_unexpected_state")
        return self._confirm(intent, method)

    def _confirm(self, intent: dict[str, Any], method: str) -> web.Response:
        intent["payment_method"] = method
        if method in DECLINES:
            code, decline = DECLINES[method]
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {"code": code, "decline_code": decline, "message": "Your card was declined."}
            self._emit("payment_intent.payment_failed", intent)
            return _error(402, "card_error", "Your card was declined.", code=code, decline_code=decline,
                          payment_intent=intent)
        if not method.startswith("pm_"):
            return _error(400, "invalid_request_error", f"No such PaymentMethod: '{method}'", code="resource_missing")
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        intent["latest_charge"] = _id("ch")
        self.ledger.append({"type": "charge", "payment_intent": intent["id"], "amount": intent["amount"],
                            "currency": intent["currency"], "payment_id": intent["metadata"].get("payment_id")})
        self._emit("payment_intent.succeeded", intent)
        return web.json_response(intent)

    async def create_refund(self, request: web.Request) -> web.Response:
        form = await request.post()
        intent = self.intents.get(str(form.get("payment_intent")))
        if intent is None or intent["status"] != "succeeded":
            return _error(400, "invalid_request_error", "This PaymentIntent has no successful charge to refund.")
        remaining = intent["amount_received"] - intent["amount_refunded"]
        amount = int(form.get("amount") or remaining)
        if not 0 < amount <= remaining:
            return _error(400, "invalid_request_error",
                          f"Refund amount ({amount}) is greater than unrefunded amount ({remaining}).",
                          param="amount")
        intent["amount_refunded"] += amount
        refund = {"id": _id("re"), "object": "refund", "amount": amount, "currency": intent["currency"],
                  "payment_intent": intent["id"], "status": "succeeded", "created": int(time.time())}
        self.ledger.append({"type": "refund", "payment_intent": intent["id"], "amount": amount,
                            "currency": intent["currency"], "payment_id": intent["metadata"].get("payment_id")})
        charge = {"id": intent.get("latest_charge"), "object": "charge", "payment_intent": intent["id"],
                  "amount": intent["amount"], "amount_refunded": intent["amount_refunded"],
                  "currency": intent["currency"], "metadata": intent["metadata"],
                  "refunded": intent["amount_refunded"] == intent["amount"]}
        self._emit("charge.refunded", charge)
        return web.json_response(refund)

    async def create_endpoint(self, request: web.Request) -> web.Response:
        form = await request.post()
        endpoint = {"id": _id("we"), "object": "webhook_endpoint", "url": form.get("url"),
                    "enabled_events": [v for k, v in form.items() if k.startswith("enabled_events[")],
                    "secret": f"whsec_{secrets.token_hex(24)}", "status": "enabled"}
        self.endpoints.append(endpoint)
        return web.json_response(endpoint)

    async def balance(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "balance", "livemode": False, "available": [], "pending": []})

    # -- events ---------------------------------------------------------------------------
    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        event = {"id": _id("evt"), "object": "event", "type": type_, "created": int(time.time()),
                 "api_version": "2024-06-20", "livemode": False, "data": {"object": json.loads(json.dumps(obj))}}
        self.events[event["id"]] = event
        for endpoint in self.endpoints:
            if type_ in endpoint["enabled_events"] or "*" in endpoint["enabled_events"]:
                self._spawn(self._deliver(endpoint, event))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def sign(self, secret: str, payload: bytes, timestamp: int | None = None) -> str:
        ts = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={ts},v1={digest}"

    async def _deliver(self, endpoint: dict[str, Any], event: dict[str, Any], *, delay_s: float = 0.0,
                       timestamp: int | None = None, attempts: int = 4) -> int | None:
        """POST the signed event; retry with backoff on failure, as Stripe does (in minutes there)."""
        await asyncio.sleep(delay_s)
        payload = json.dumps(event).encode()
        assert self._http is not None
        for attempt in range(attempts):
            headers = {"Content-Type": "application/json",
                       "Stripe-Signature": self.sign(endpoint["secret"], payload, timestamp)}
            try:
                async with self._http.post(endpoint["url"], data=payload, headers=headers) as resp:
                    if resp.status < 500:
                        return resp.status
            except aiohttp.ClientError as exc:
                log.info("webhook delivery to %s failed: %s", endpoint["url"], exc)
            await asyncio.sleep(0.2 * 2 ** attempt)
        return None

    # -- controls -------------------------------------------------------------------------
    async def get_ledger(self, request: web.Request) -> web.Response:
        return web.json_response({"ledger": self.ledger, "events": list(self.events)})

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.faults = {"delay_s": float(body.get("delay_s", 0)), "status": body.get("status"),
                       "count": int(body.get("count", 1))}
        return web.json_response(self.faults)

    async def redeliver(self, request: web.Request) -> web.Response:
        """Deliver an event again (duplicates), later (`delay_s`) or with an old timestamp (`age_s`)."""
        event = self.events.get(request.match_info["id"])
        if event is None or not self.endpoints:
            return _error(404, "invalid_request_error", "No such event or no endpoint")
        body = await request.json() if request.can_read_body else {}
        age = int(body.get("age_s", 0))
        status = await self._deliver(self.endpoints[-1], event, delay_s=float(body.get("delay_s", 0)),
                                     timestamp=int(time.time()) - age if age else None, attempts=1)
        return web.json_response({"delivered": status})


def main() -> None:
    """`python -m payments.local.stripe_server --port 12111 --api-key sk_test_x`: run it on its own."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m payments.local.stripe_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()

    async def serve() -> None:
        server = LocalStripe(args.api_key)
        print(f"local Stripe API on {await server.start(args.host, args.port)}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
