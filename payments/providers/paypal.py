"""PayPal Orders v2 over aiohttp: OAuth2 client credentials, create → payer approval → capture,
refunds of captures, and webhooks verified by PayPal's verify-webhook-signature API.

`PayPal-Request-Id` carries our idempotency (derived from the payment id) on every write.
"""
from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any, Mapping

import aiohttp

from .base import Charge, ChargeResult, InvalidEvent, ProviderEvent, ProviderUnavailable, RefundResult, basic_auth

EVENTS = {"PAYMENT.CAPTURE.COMPLETED": "succeeded", "PAYMENT.CAPTURE.DENIED": "failed",
          "PAYMENT.CAPTURE.REFUNDED": "refunded", "CHECKOUT.ORDER.APPROVED": "approved"}
SIGNATURE_HEADERS = ("paypal-auth-algo", "paypal-cert-url", "paypal-transmission-id", "paypal-transmission-sig",
                     "paypal-transmission-time")


def _value(minor: int) -> str:
    return str(Decimal(minor).scaleb(-2).quantize(Decimal("0.01")))


def _minor(value: str) -> int:
    return int(Decimal(value).scaleb(2))


class PayPalProvider:
    name = "paypal"

    def __init__(self, client_id: str, client_secret: str, api_base: str, webhook_id: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.mode = "local" if api_base.startswith("http://") else (
            "sandbox" if "sandbox" in api_base else "live")
        self.api_base = api_base.rstrip("/")
        self.webhook_id = webhook_id
        self._basic = basic_auth(client_id, client_secret)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _access_token(self) -> str:
        async with self._lock:
            if self._token is None or self._token[1] < time.monotonic():
                data = await self._request("POST", "/v1/oauth2/token", form={"grant_type": "client_credentials"},
                                           auth=True)
                self._token = (data["access_token"], time.monotonic() + float(data.get("expires_in", 3600)) - 60)
            return self._token[0]

    async def _request(self, method: str, path: str, *, body: Any = None, form: Any = None, request_id: str | None = None,
                       auth: bool = False) -> Any:
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["PayPal-Request-Id"] = request_id
        kwargs: dict[str, Any] = {"headers": headers}
        if auth:
            headers["Authorization"] = self._basic
            kwargs["data"] = form
            headers.pop("Content-Type")
        else:
            headers["Authorization"] = f"Bearer {await self._access_token()}"
            if body is not None:
                kwargs["data"] = json.dumps(body)
        try:
            async with self.session.request(method, self.api_base + path, **kwargs) as resp:
                payload = await resp.json(content_type=None)
                if resp.status >= 500:
                    raise ProviderUnavailable(f"PayPal error {resp.status}")
                if resp.status >= 400:
                    payload = payload or {}
                    payload["_status"] = resp.status
                return payload
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ProviderUnavailable(f"PayPal is unreachable: {type(exc).__name__}") from None

    def _result(self, order: dict[str, Any]) -> ChargeResult:
        status = order.get("status")
        unit = (order.get("purchase_units") or [{}])[0]
        captures = (unit.get("payments") or {}).get("captures") or []
        amount = unit.get("amount") or (captures[0]["amount"] if captures else {})
        approve = next((link["href"] for link in order.get("links", []) if link.get("rel") in ("approve", "payer-action")),
                       None)
        mapped = {"COMPLETED": "succeeded", "VOIDED": "failed"}.get(status, "requires_action")
        if captures and captures[0].get("status") == "DECLINED":
            mapped = "failed"
        return ChargeResult(transaction_id=order.get("id"), status=mapped,  # type: ignore[arg-type]
                            amount_minor=_minor(amount["value"]) if amount.get("value") else None,
                            currency=amount.get("currency_code"), approval_url=approve if mapped != "succeeded" else None)

    async def create(self, charge: Charge) -> ChargeResult:
        body = {"intent": "CAPTURE",
                "purchase_units": [{"reference_id": charge.payment_id, "custom_id": charge.payment_id,
                                    "invoice_id": charge.payment_id,
                                    "amount": {"currency_code": charge.currency, "value": _value(charge.amount_minor)}}],
                "payment_source": {"paypal": {"experience_context": {
                    "return_url": charge.data["returnUrl"], "cancel_url": charge.data["cancelUrl"],
                    "user_action": "PAY_NOW"}}}}
        order = await self._request("POST", "/v2/checkout/orders", body=body, request_id=f"create-{charge.payment_id}")
        if "_status" in order:
            return ChargeResult(None, "failed", failure_reason=order.get("message", "PayPal refused the order"))
        return self._result(order)

    async def verify(self, transaction_id: str) -> ChargeResult:
        """Look the order up; an approved order is captured now (idempotently)."""
        order = await self._request("GET", f"/v2/checkout/orders/{transaction_id}")
        if order.get("status") == "APPROVED":
            order = await self._request("POST", f"/v2/checkout/orders/{transaction_id}/capture", body={},
                                        request_id=f"capture-{transaction_id}")
            if "_status" in order:
                return ChargeResult(transaction_id, "failed", failure_reason=order.get("message", "capture declined"))
        return self._result(order)

    async def refund(self, transaction_id: str, amount_minor: int, idempotency_key: str) -> RefundResult:
        order = await self._request("GET", f"/v2/checkout/orders/{transaction_id}")
        captures = ((order.get("purchase_units") or [{}])[0].get("payments") or {}).get("captures") or []
        if not captures:
            return RefundResult("", "failed", amount_minor)
        currency = captures[0]["amount"]["currency_code"]
        refund = await self._request("POST", f"/v2/payments/captures/{captures[0]['id']}/refund",
                                     body={"amount": {"value": _value(amount_minor), "currency_code": currency}},
                                     request_id=idempotency_key)
        if "_status" in refund:
            return RefundResult("", "failed", amount_minor)
        return RefundResult(refund["id"], "succeeded" if refund.get("status") == "COMPLETED" else "pending",
                            amount_minor)

    async def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if not self.webhook_id:
            raise InvalidEvent("no PayPal webhook id configured")
        try:
            event = json.loads(payload)
        except ValueError:
            raise InvalidEvent("webhook body is not JSON") from None
        if any(h not in headers for h in SIGNATURE_HEADERS):
            raise InvalidEvent("missing PayPal transmission headers")
        check = await self._request("POST", "/v1/notifications/verify-webhook-signature", body={
            "auth_algo": headers["paypal-auth-algo"], "cert_url": headers["paypal-cert-url"],
            "transmission_id": headers["paypal-transmission-id"],
            "transmission_sig": headers["paypal-transmission-sig"],
            "transmission_time": headers["paypal-transmission-time"],
            "webhook_id": self.webhook_id, "webhook_event": event})
        if check.get("verification_status") != "SUCCESS":
            raise InvalidEvent("PayPal says the signature is not valid")
        resource = event.get("resource") or {}
        kind = EVENTS.get(event.get("event_type", ""), "ignored")
        related = ((resource.get("supplementary_data") or {}).get("related_ids") or {})
        order_id = resource.get("id") if kind == "approved" else related.get("order_id")
        amount = resource.get("amount") or {}
        if kind == "approved":  # capture now; the capture's own event settles it
            return ProviderEvent(event_id=event["id"], kind="ignored", transaction_id=order_id,
                                 raw_type=event["event_type"], extra={"capture": order_id})
        return ProviderEvent(event_id=event["id"], kind=kind, transaction_id=order_id,  # type: ignore[arg-type]
                             payment_id=resource.get("custom_id"),
                             amount_minor=_minor(amount["value"]) if amount.get("value") else None,
                             currency=amount.get("currency_code"), raw_type=event.get("event_type", ""))

    async def ensure_webhook_endpoint(self, url: str) -> None:
        """Local mode: register our webhook (as in PayPal's dashboard) and keep its id."""
        if self.webhook_id or self.mode != "local":
            return
        hook = await self._request("POST", "/v1/notifications/webhooks", body={
            "url": url, "event_types": [{"name": name} for name in EVENTS]})
        self.webhook_id = hook.get("id")

    async def reachable(self) -> bool:
        try:
            await self._access_token()
            return True
        except (ProviderUnavailable, KeyError):
            return False
