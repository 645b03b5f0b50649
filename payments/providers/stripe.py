"""Stripe through the official library: PaymentIntents, refunds, signed webhooks.

The same code talks to api.stripe.com or to our local Stripe server; only the base address
and keys differ.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Mapping

import stripe
from stripe import (APIConnectionError, APIError, CardError, InvalidRequestError, RateLimitError,
                    SignatureVerificationError, StripeError)

from .base import Charge, ChargeResult, InvalidEvent, ProviderEvent, ProviderUnavailable, RefundResult

STATUS = {"succeeded": "succeeded", "processing": "pending", "canceled": "failed",
          "requires_payment_method": "requires_action", "requires_confirmation": "requires_action",
          "requires_action": "requires_action", "requires_capture": "pending"}
EVENTS = {"payment_intent.succeeded": "succeeded", "payment_intent.payment_failed": "failed",
          "charge.refunded": "refunded"}
WEBHOOK_TOLERANCE_S = 300


class StripeProvider:
    name = "stripe"

    def __init__(self, secret_key: str, webhook_secret: str | None, api_base: str = "https://api.stripe.com",
                 timeout_s: float = 10.0) -> None:
        self.mode = "local" if api_base.startswith("http://") else ("live" if secret_key.startswith("sk_live") else "sandbox")
        self.webhook_secret = webhook_secret
        self._http = stripe.AIOHTTPClient(timeout=timeout_s)
        self._client = stripe.StripeClient(secret_key, base_addresses={"api": api_base}, max_network_retries=0,
                                           http_client=self._http)
        self._endpoint_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._http.close_async()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (APIConnectionError, RateLimitError, asyncio.TimeoutError) as exc:
            raise ProviderUnavailable(f"Stripe is unreachable: {type(exc).__name__}") from None
        except APIError as exc:
            raise ProviderUnavailable(f"Stripe error {exc.http_status}: {exc.user_message or exc}") from None
        except (AttributeError, KeyError, ValueError, TypeError) as exc:  # a reply the library could not read
            raise ProviderUnavailable(f"unexpected reply from Stripe: {type(exc).__name__}") from None

    @staticmethod
    def _result(intent: Any) -> ChargeResult:
        return ChargeResult(transaction_id=intent.id, status=STATUS.get(intent.status, "pending"),  # type: ignore[arg-type]
                            amount_minor=intent.amount, currency=intent.currency.upper(),
                            client_secret=intent.client_secret)

    async def create(self, charge: Charge) -> ChargeResult:
        params: dict[str, Any] = {"amount": charge.amount_minor, "currency": charge.currency.lower(),
                                  "payment_method_types": ["card"],
                                  "metadata": {"payment_id": charge.payment_id, "order_id": charge.order_id}}
        method = charge.data.get("paymentMethodId")
        if method:
            params.update(payment_method=method, confirm=True)
        try:
            intent = await self._call(self._client.v1.payment_intents.create_async(
                params=params, options={"idempotency_key": f"pay-{charge.payment_id}"}))
        except CardError as exc:
            intent_id = getattr(getattr(exc.error, "payment_intent", None), "id", None)
            return ChargeResult(transaction_id=intent_id, status="failed", amount_minor=charge.amount_minor,
                                currency=charge.currency, failure_reason=exc.user_message or "card declined")
        return self._result(intent)

    async def verify(self, transaction_id: str) -> ChargeResult:
        return self._result(await self._call(self._client.v1.payment_intents.retrieve_async(transaction_id)))

    async def refund(self, transaction_id: str, amount_minor: int, idempotency_key: str) -> RefundResult:
        try:
            refund = await self._call(self._client.v1.refunds.create_async(
                params={"payment_intent": transaction_id, "amount": amount_minor},
                options={"idempotency_key": idempotency_key}))
        except InvalidRequestError:  # e.g. more than what is left to refund
            return RefundResult(refund_id="", status="failed", amount_minor=amount_minor)
        return RefundResult(refund_id=refund.id, status="succeeded" if refund.status == "succeeded" else "pending",
                            amount_minor=refund.amount)

    async def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        if not self.webhook_secret:
            raise InvalidEvent("no webhook secret configured")
        try:
            event = stripe.Webhook.construct_event(payload, headers.get("stripe-signature"), self.webhook_secret,
                                                   tolerance=WEBHOOK_TOLERANCE_S)
        except (SignatureVerificationError, ValueError) as exc:
            raise InvalidEvent(f"invalid Stripe signature or payload: {exc}") from None
        obj = json.loads(payload)["data"]["object"]
        kind = EVENTS.get(event.type, "ignored")
        intent_id = obj.get("payment_intent") if obj.get("object") == "charge" else obj.get("id")
        return ProviderEvent(event_id=event.id, kind=kind, transaction_id=intent_id,  # type: ignore[arg-type]
                             payment_id=(obj.get("metadata") or {}).get("payment_id"),
                             amount_minor=obj.get("amount_refunded") if kind == "refunded" else obj.get("amount"),
                             currency=(obj.get("currency") or "").upper() or None, raw_type=event.type)

    async def ensure_webhook_endpoint(self, url: str) -> None:
        """Local mode: register our webhook URL, as one would in Stripe's dashboard (keeps the secret)."""
        async with self._endpoint_lock:
            if self.webhook_secret or self.mode != "local":
                return
            endpoint = await self._call(self._client.v1.webhook_endpoints.create_async(
                params={"url": url, "enabled_events": sorted(EVENTS)}))
            self.webhook_secret = endpoint.secret

    async def reachable(self) -> bool:
        try:
            await self._call(self._client.v1.balance.retrieve_async())
            return True
        except (ProviderUnavailable, StripeError):
            return False
