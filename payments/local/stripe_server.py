"""A local Stripe: the subset of Stripe's HTTP API that rest-shop uses, for dev and tests.

The official `stripe` library talks to it unchanged (form-encoded requests, `Idempotency-Key`,
Stripe's JSON objects and error shapes). It keeps a ledger of charges and refunds, registers
webhook endpoints (`POST /v1/webhook_endpoints` returns the signing secret, as Stripe does) and
delivers signed events. Test payment methods: `pm_card_visa` succeeds, `pm_card_chargeDeclined`
and `pm_card_chargeDeclinedInsufficientFunds` are declined.
Controls under `/_local/` (ledger, faults, event redelivery) come from `LocalProviderServer`.
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

from aiohttp import web

from .base import LocalProviderServer, new_id

log = logging.getLogger("rest_shop.local_stripe")

DECLINES = {"pm_card_chargeDeclined": ("card_declined", "generic_decline"),
            "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds")}


def _error(status: int, type_: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message, **extra}}, status=status)


class LocalStripe(LocalProviderServer):
    title = "Stripe"

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.intents: dict[str, dict[str, Any]] = {}
        self.endpoints: list[dict[str, Any]] = []
        self._idempotency: dict[str, tuple[str, int, bytes]] = {}
        self._in_progress: set[str] = set()

    def middlewares(self) -> list[Any]:
        return [self._middleware]

    def fault_response(self, status: int) -> web.Response:
        return _error(status, "api_error", "Simulated Stripe failure")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/payment_intents", self.create_intent)
        app.router.add_get("/v1/payment_intents/{id}", self.get_intent)
        app.router.add_post("/v1/payment_intents/{id}/confirm", self.confirm_intent)
        app.router.add_post("/v1/refunds", self.create_refund)
        app.router.add_post("/v1/webhook_endpoints", self.create_endpoint)
        app.router.add_get("/v1/balance", self.balance)

    # -- middleware: auth, idempotency ----------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_request_error", "Invalid API Key provided")
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
        intent = {"id": new_id("pi"), "object": "payment_intent", "amount": amount, "currency": currency,
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
        intent["latest_charge"] = new_id("ch")
        self.record("charge", intent["amount"], intent["currency"], intent["metadata"].get("payment_id"),
                    payment_intent=intent["id"])
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
        refund = {"id": new_id("re"), "object": "refund", "amount": amount, "currency": intent["currency"],
                  "payment_intent": intent["id"], "status": "succeeded", "created": int(time.time())}
        self.record("refund", amount, intent["currency"], intent["metadata"].get("payment_id"),
                    payment_intent=intent["id"])
        charge = {"id": intent.get("latest_charge"), "object": "charge", "payment_intent": intent["id"],
                  "amount": intent["amount"], "amount_refunded": intent["amount_refunded"],
                  "currency": intent["currency"], "metadata": intent["metadata"],
                  "refunded": intent["amount_refunded"] == intent["amount"]}
        self._emit("charge.refunded", charge)
        return web.json_response(refund)

    async def create_endpoint(self, request: web.Request) -> web.Response:
        form = await request.post()
        endpoint = {"id": new_id("we"), "object": "webhook_endpoint", "url": form.get("url"),
                    "enabled_events": [v for k, v in form.items() if k.startswith("enabled_events[")],
                    "secret": f"whsec_{secrets.token_hex(24)}", "status": "enabled"}
        self.endpoints.append(endpoint)
        return web.json_response(endpoint)

    async def balance(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "balance", "livemode": False, "available": [], "pending": []})

    # -- events ---------------------------------------------------------------------------
    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        event = {"id": new_id("evt"), "object": "event", "type": type_, "created": int(time.time()),
                 "api_version": "2024-06-20", "livemode": False, "data": {"object": json.loads(json.dumps(obj))}}
        self.emit(event["id"], event)

    def sign(self, secret: str, payload: bytes, timestamp: int | None = None) -> str:
        ts = int(time.time()) if timestamp is None else timestamp
        digest = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={ts},v1={digest}"

    async def deliver_event(self, event: dict[str, Any], *, age_s: int = 0) -> int | None:
        """POST the event, signed as Stripe signs it, to every endpoint that wants its type."""
        payload = json.dumps(event).encode()
        status: int | None = None
        for endpoint in self.endpoints:
            if event["type"] in endpoint["enabled_events"] or "*" in endpoint["enabled_events"]:
                signature = self.sign(endpoint["secret"], payload, int(time.time()) - age_s)
                status = await self.post(endpoint["url"], payload, {"Content-Type": "application/json",
                                                                    "Stripe-Signature": signature})
        return status


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
