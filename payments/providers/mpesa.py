"""M-Pesa (Safaricom Daraja) over aiohttp: OAuth, STK push, STK query, and the callback format.

STK push has no provider-side idempotency, so the service never sends a second push for one
payment record (see `service.initiate`). Callbacks carry no signature: the route checks a secret
token in the callback URL and, optionally, the sender's IP (`MPESA_ALLOWED_IPS`).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import aiohttp

from .base import (Charge, ChargeResult, InvalidEvent, ProviderEvent, ProviderUnavailable, RefundNotSupported,
                   RefundResult, basic_auth)

EAT = timezone(timedelta(hours=3))  # Daraja timestamps are Nairobi time
PENDING_CODES = {"500.001.1001"}    # "the transaction is being processed"


def callback_signature(secret: str, payment_id: str) -> str:
    """The credential of one payment's callback URL (HMAC-SHA256 of its id under the secret)."""
    return hmac.new(secret.encode(), f"mpesa-callback:{payment_id}".encode(), hashlib.sha256).hexdigest()


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


class MpesaProvider:
    name = "mpesa"
    currencies = frozenset({"KES"})

    def __init__(self, consumer_key: str, consumer_secret: str, passkey: str, shortcode: str, api_base: str,
                 callback_token: str, timeout_s: float = 10.0) -> None:
        self.mode = "local" if api_base.startswith("http://") else ("sandbox" if "sandbox" in api_base else "live")
        self.api_base = api_base.rstrip("/")
        self.passkey, self.shortcode, self.callback_token = passkey, shortcode, callback_token
        self._basic = basic_auth(consumer_key, consumer_secret)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def amount_problem(amount_minor: int) -> str | None:
        """Daraja's Amount is whole shillings: a price with cents cannot be asked for."""
        return "M-Pesa takes whole shillings" if amount_minor % 100 else None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
        try:
            async with self.session.request(method, self.api_base + path, headers=headers,
                                            data=None if body is None else json.dumps(body)) as resp:
                payload = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"M-Pesa is unreachable: {type(exc).__name__}") from None
        if resp.status >= 500 and (payload or {}).get("errorCode") not in PENDING_CODES:
            raise ProviderUnavailable(f"M-Pesa error {resp.status}")
        return resp.status, payload or {}

    async def _access_token(self) -> str:
        async with self._lock:
            if self._token is None or self._token[1] < time.monotonic():
                status, data = await self._send("GET", "/oauth/v1/generate?grant_type=client_credentials",
                                                {"Authorization": self._basic})
                if status != 200 or "access_token" not in data:
                    raise ProviderUnavailable("M-Pesa refused our credentials")
                self._token = (data["access_token"], time.monotonic() + float(data.get("expires_in", 3599)) - 60)
            return self._token[0]

    async def _call(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {await self._access_token()}", "Content-Type": "application/json"}
        return await self._send("POST", path, headers, body)

    def _credentials(self) -> dict[str, str]:
        timestamp = datetime.now(EAT).strftime("%Y%m%d%H%M%S")
        return {"BusinessShortCode": self.shortcode, "Timestamp": timestamp,
                "Password": stk_password(self.shortcode, self.passkey, timestamp)}

    async def create(self, charge: Charge) -> ChargeResult:
        phone = charge.data["phoneNumber"]
        body = {**self._credentials(), "TransactionType": "CustomerPayBillOnline", "Amount": charge.amount_minor // 100,
                "PartyA": phone, "PartyB": self.shortcode, "PhoneNumber": phone,
                # our payment id rides in the URL Daraja calls back: the callback finds its record
                # even when the push reply was lost to a timeout (no CheckoutRequestID stored)
                "CallBackURL": self.callback_url(charge.public_base_url, charge.payment_id),
                "AccountReference": charge.payment_id[-12:], "TransactionDesc": f"Order {charge.order_id[-8:]}"}
        status, reply = await self._call("/mpesa/stkpush/v1/processrequest", body)
        if status != 200 or reply.get("ResponseCode") != "0":
            return ChargeResult(None, "failed", failure_reason=reply.get("errorMessage") or reply.get("ResponseDescription")
                                or "M-Pesa refused the request")
        return ChargeResult(transaction_id=reply["CheckoutRequestID"], status="pending",
                            customer_message=reply.get("CustomerMessage"))

    def callback_url(self, public_base_url: str, payment_id: str) -> str:
        return (f"{public_base_url}/payments/mpesa/callback?payment={payment_id}"
                f"&sig={callback_signature(self.callback_token, payment_id)}")

    def callback_is_genuine(self, payment_id: str, signature: str) -> bool:
        """Constant-time check of a callback URL's credential against the payment it names."""
        return hmac.compare_digest(signature.encode(), callback_signature(self.callback_token, payment_id).encode())

    async def verify(self, transaction_id: str) -> ChargeResult:
        status, reply = await self._call("/mpesa/stkpushquery/v1/query",
                                         {**self._credentials(), "CheckoutRequestID": transaction_id})
        if reply.get("errorCode") in PENDING_CODES:
            return ChargeResult(transaction_id, "pending")
        code = str(reply.get("ResultCode", ""))
        if code == "0":  # the query does not report the amount: it is the one our push asked for
            return ChargeResult(transaction_id, "succeeded")
        return ChargeResult(transaction_id, "failed", failure_reason=reply.get("ResultDesc") or f"ResultCode {code}")

    async def refund(self, transaction_id: str, amount_minor: int, idempotency_key: str) -> RefundResult:
        raise RefundNotSupported("M-Pesa payments are refunded as reversals in the M-Pesa org portal")

    async def parse_event(self, payload: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """An STK callback (its URL already authenticated by the route); the CheckoutRequestID
        dedups it. What it claims is checked against our record before it counts."""
        try:
            callback = json.loads(payload)["Body"]["stkCallback"]
            checkout = str(callback["CheckoutRequestID"])
            code = int(callback["ResultCode"])
            items = {i.get("Name"): i.get("Value") for i in (callback.get("CallbackMetadata") or {}).get("Item", [])}
            amount = items.get("Amount")
            amount_minor = int(round(float(amount) * 100)) if amount is not None else None
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise InvalidEvent("not an STK callback") from None
        phone = items.get("PhoneNumber")
        return ProviderEvent(event_id=checkout, kind="succeeded" if code == 0 else "failed", transaction_id=checkout,
                             amount_minor=amount_minor, currency="KES", raw_type=f"stkCallback:{code}",
                             extra={"receipt": items.get("MpesaReceiptNumber"), "reason": callback.get("ResultDesc"),
                                    "phone": str(phone) if phone else None})

    async def reachable(self) -> bool:
        try:
            await self._access_token()
            return True
        except ProviderUnavailable:
            return False
