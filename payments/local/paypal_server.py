"""A local PayPal: OAuth2 client credentials, Orders v2 (create, get, capture), capture refunds,
webhook registration, signed webhook delivery and PayPal's verify-webhook-signature API.

The payer's approval is simulated at the order's `payer-action` link
(`GET /checkoutnow?token=<order id>`; add `&decline=1` to have the capture declined).
`PayPal-Request-Id` makes every write idempotent, as on PayPal.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from aiohttp import web
from yarl import URL

from ..providers.base import basic_auth
from .base import LocalProviderServer, new_id


def _error(status: int, name: str, issue: str, message: str) -> web.Response:
    return web.json_response({"name": name, "message": message, "details": [{"issue": issue}]}, status=status)


class LocalPayPal(LocalProviderServer):
    title = "PayPal"

    def __init__(self, client_id: str, client_secret: str) -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.orders: dict[str, dict[str, Any]] = {}
        self.captures: dict[str, dict[str, Any]] = {}
        self.webhooks: list[dict[str, Any]] = []
        self.transmissions: dict[str, str] = {}       # transmission id → signature we sent
        self._signing_key = secrets.token_bytes(32)
        self._requests: dict[str, tuple[int, bytes]] = {}

    def middlewares(self) -> list[Any]:
        return [self._auth_and_idempotency]

    def fault_response(self, status: int) -> web.Response:
        return _error(status, "INTERNAL_SERVICE_ERROR", "INTERNAL_SERVICE_ERROR", "Simulated PayPal failure")

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/oauth2/token", self.token)
        app.router.add_post("/v2/checkout/orders", self.create_order)
        app.router.add_get("/v2/checkout/orders/{id}", self.get_order)
        app.router.add_post("/v2/checkout/orders/{id}/capture", self.capture)
        app.router.add_post("/v2/payments/captures/{id}/refund", self.refund)
        app.router.add_post("/v1/notifications/webhooks", self.create_webhook)
        app.router.add_post("/v1/notifications/verify-webhook-signature", self.verify_signature)
        app.router.add_get("/checkoutnow", self.approve)

    @web.middleware
    async def _auth_and_idempotency(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in ("/v1/oauth2/token", "/checkoutnow") or request.path.startswith("/_local/"):
            return await handler(request)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return _error(401, "AUTHENTICATION_FAILURE", "INVALID_TOKEN", "Authentication failed")
        key = request.headers.get("PayPal-Request-Id")
        if request.method == "POST" and key:
            if key in self._requests:
                status, body = self._requests[key]
                return web.Response(body=body, status=status, content_type="application/json")
            response = await handler(request)
            if response.status < 500:
                self._requests[key] = (response.status, response.body)  # type: ignore[attr-defined]
            return response
        return await handler(request)

    async def token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_auth(self.client_id, self.client_secret):
            return web.json_response({"error": "invalid_client", "error_description": "Client Authentication failed"},
                                     status=401)
        token = f"A21AA{secrets.token_hex(20)}"
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 32400,
                                  "app_id": "APP-LOCAL", "scope": "https://uri.paypal.com/services/payments"})

    async def create_order(self, request: web.Request) -> web.Response:
        body = await request.json()
        units = body.get("purchase_units") or []
        if body.get("intent") != "CAPTURE" or len(units) != 1 or "amount" not in units[0]:
            return _error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER", "intent and one purchase unit needed")
        order_id = secrets.token_hex(8).upper()
        context = ((body.get("payment_source") or {}).get("paypal") or {}).get("experience_context") or {}
        order = {"id": order_id, "status": "PAYER_ACTION_REQUIRED", "intent": "CAPTURE",
                 "purchase_units": [{k: v for k, v in units[0].items()}],
                 "create_time": datetime.now(timezone.utc).isoformat(), "_context": context, "_decline": False,
                 "links": [{"href": f"{self.url}/v2/checkout/orders/{order_id}", "rel": "self", "method": "GET"},
                           {"href": f"{self.url}/checkoutnow?token={order_id}", "rel": "payer-action", "method": "GET"}]}
        self.orders[order_id] = order
        return web.json_response(self._public(order), status=200 if request.headers.get("Prefer") else 201)

    @staticmethod
    def _public(order: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in order.items() if not k.startswith("_")}

    async def get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist.")
        return web.json_response(self._public(order))

    async def approve(self, request: web.Request) -> web.Response:
        """The payer approves on PayPal's page; PayPal sends them back to the shop's return URL."""
        order = self.orders.get(request.query.get("token", ""))
        if order is None:
            return web.Response(status=404, text="unknown order")
        if order["status"] == "PAYER_ACTION_REQUIRED":
            order["status"] = "APPROVED"
            order["payer"] = {"payer_id": secrets.token_hex(6).upper(), "email_address": "buyer@example.com"}
            order["_decline"] = request.query.get("decline") == "1"
            self._emit("CHECKOUT.ORDER.APPROVED", self._public(order))
        # as PayPal does: back to the return URL with the order id (`token`) and the payer's id
        back = URL(order["_context"].get("return_url") or "/")
        raise web.HTTPFound(str(back.update_query(token=order["id"], PayerID=order["payer"]["payer_id"])))

    async def capture(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist.")
        if order["status"] == "COMPLETED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED", "Order already captured.")
        if order["status"] != "APPROVED":
            return _error(422, "UNPROCESSABLE_ENTITY", "ORDER_NOT_APPROVED", "Payer has not yet approved the Order.")
        unit = order["purchase_units"][0]
        capture = {"id": secrets.token_hex(8).upper(), "status": "DECLINED" if order["_decline"] else "COMPLETED",
                   "amount": unit["amount"], "custom_id": unit.get("custom_id"), "refunded_minor": 0,
                   "supplementary_data": {"related_ids": {"order_id": order["id"]}}}
        self.captures[capture["id"]] = capture
        unit["payments"] = {"captures": [self._public_capture(capture)]}
        if order["_decline"]:
            self._emit("PAYMENT.CAPTURE.DENIED", self._public_capture(capture))
            return _error(422, "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED", "The instrument presented was declined.")
        order["status"] = "COMPLETED"
        minor = int(Decimal(unit["amount"]["value"]).scaleb(2))
        self.record("charge", minor, unit["amount"]["currency_code"], unit.get("custom_id"), order_id=order["id"])
        self._emit("PAYMENT.CAPTURE.COMPLETED", self._public_capture(capture))
        return web.json_response(self._public(order), status=201)

    @staticmethod
    def _public_capture(capture: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in capture.items() if k != "refunded_minor"}

    async def refund(self, request: web.Request) -> web.Response:
        capture = self.captures.get(request.match_info["id"])
        if capture is None or capture["status"] not in ("COMPLETED", "PARTIALLY_REFUNDED"):
            return _error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "No completed capture to refund.")
        body = await request.json() if request.can_read_body else {}
        captured = int(Decimal(capture["amount"]["value"]).scaleb(2))
        amount = int(Decimal((body.get("amount") or {}).get("value", "0")).scaleb(2)) or captured - capture["refunded_minor"]
        if not 0 < amount <= captured - capture["refunded_minor"]:
            return _error(422, "UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED", "Refund amount exceeds the capture.")
        capture["refunded_minor"] += amount
        capture["status"] = "REFUNDED" if capture["refunded_minor"] == captured else "PARTIALLY_REFUNDED"
        refund = {"id": secrets.token_hex(8).upper(), "status": "COMPLETED",
                  "amount": {"value": str(Decimal(amount).scaleb(-2)), "currency_code": capture["amount"]["currency_code"]}}
        self.record("refund", amount, capture["amount"]["currency_code"], capture.get("custom_id"))
        self._emit("PAYMENT.CAPTURE.REFUNDED", {**self._public_capture(capture), "amount": {
            "value": str(Decimal(capture["refunded_minor"]).scaleb(-2)),
            "currency_code": capture["amount"]["currency_code"]}})
        return web.json_response(refund, status=201)

    async def create_webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        hook = {"id": new_id("WH").upper(), "url": body["url"], "event_types": body.get("event_types", [])}
        self.webhooks.append(hook)
        return web.json_response(hook, status=201)

    # -- events ---------------------------------------------------------------------------
    def _emit(self, event_type: str, resource: dict[str, Any]) -> None:
        event = {"id": new_id("WH-EVT").upper(), "event_version": "1.0", "event_type": event_type,
                 "resource_type": "capture" if "PAYMENT.CAPTURE" in event_type else "checkout-order",
                 "create_time": datetime.now(timezone.utc).isoformat(), "resource": json.loads(json.dumps(resource))}
        self.emit(event["id"], event)

    async def deliver_event(self, event: dict[str, Any], *, age_s: int = 0) -> int | None:
        status: int | None = None
        for hook in self.webhooks:
            payload = json.dumps(event).encode()
            transmission = secrets.token_hex(12)
            sent_at = datetime.fromtimestamp(time.time() - age_s, timezone.utc).isoformat()
            signature = base64.b64encode(hmac.new(self._signing_key, f"{transmission}|{sent_at}|{hook['id']}|"
                                                  .encode() + payload, hashlib.sha256).digest()).decode()
            self.transmissions[transmission] = signature
            status = await self.post(hook["url"], payload, {
                "Content-Type": "application/json", "PAYPAL-AUTH-ALGO": "SHA256withRSA",
                "PAYPAL-CERT-URL": f"{self.url}/v1/notifications/certs/local", "PAYPAL-TRANSMISSION-ID": transmission,
                "PAYPAL-TRANSMISSION-SIG": signature, "PAYPAL-TRANSMISSION-TIME": sent_at})
        return status

    async def verify_signature(self, request: web.Request) -> web.Response:
        """PayPal's verify API: SUCCESS only for a transmission we sent, unaltered, recent, to that webhook."""
        body = await request.json()
        event = json.dumps(body.get("webhook_event")).encode()
        transmission = str(body.get("transmission_id"))
        expected = base64.b64encode(hmac.new(self._signing_key, f"{transmission}|{body.get('transmission_time')}|"
                                             f"{body.get('webhook_id')}|".encode() + event, hashlib.sha256).digest()).decode()
        try:
            sent_at = datetime.fromisoformat(str(body.get("transmission_time")))
            fresh = abs(time.time() - sent_at.timestamp()) <= 300
        except ValueError:
            fresh = False
        ok = (self.transmissions.get(transmission) == body.get("transmission_sig") == expected) and fresh
        return web.json_response({"verification_status": "SUCCESS" if ok else "FAILURE"})
