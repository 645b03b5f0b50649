"""A local M-Pesa (Daraja): OAuth, STK push (checking the Password rule), STK query, and the
customer's answer on the phone delivered as the STK callback.

Outcomes by phone number: ...0001 the customer cancels (1032), ...0002 insufficient balance (1),
...0003 never answers (no callback; the query keeps saying "being processed"); any other number
pays after `pin_delay_s`.
"""
from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime
from typing import Any

from aiohttp import web

from ..providers.base import basic_auth
from ..providers.mpesa import stk_password
from .base import LocalProviderServer

OUTCOMES = {"0001": (1032, "Request cancelled by user"), "0002": (1, "The balance is insufficient for the transaction.")}
SILENT = "0003"


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"requestId": secrets.token_hex(6), "errorCode": code, "errorMessage": message},
                             status=status)


class LocalMpesa(LocalProviderServer):
    title = "M-Pesa (Daraja)"

    def __init__(self, consumer_key: str, consumer_secret: str, shortcode: str, passkey: str,
                 pin_delay_s: float = 0.05) -> None:
        super().__init__()
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.shortcode, self.passkey = shortcode, passkey
        self.pin_delay_s = pin_delay_s
        self.tokens: set[str] = set()
        self.requests: dict[str, dict[str, Any]] = {}   # CheckoutRequestID → push, result
        self.pushes = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/oauth/v1/generate", self.token)
        app.router.add_post("/mpesa/stkpush/v1/processrequest", self.stk_push)
        app.router.add_post("/mpesa/stkpushquery/v1/query", self.stk_query)

    def fault_response(self, status: int) -> web.Response:
        return _error(status, "500.003.02", "System is busy. Please try again in few minutes.")

    async def token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != basic_auth(self.consumer_key, self.consumer_secret):
            return _error(400, "400.008.01", "Invalid Authentication passed")
        token = secrets.token_urlsafe(21)
        self.tokens.add(token)
        return web.json_response({"access_token": token, "expires_in": "3599"})

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens

    def _check_password(self, body: dict[str, Any]) -> bool:
        try:
            datetime.strptime(str(body.get("Timestamp")), "%Y%m%d%H%M%S")
        except ValueError:
            return False
        return body.get("BusinessShortCode") == self.shortcode and body.get("Password") == stk_password(
            self.shortcode, self.passkey, str(body["Timestamp"]))

    async def stk_push(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "404.001.03", "Invalid Access Token")
        body = await request.json()
        if not self._check_password(body):
            return _error(400, "400.002.02", "Bad Request - Invalid Password")
        phone, amount = str(body.get("PhoneNumber", "")), body.get("Amount")
        if not (isinstance(amount, int) and amount >= 1) or not (len(phone) == 12 and phone[:4] in ("2547", "2541")):
            return _error(400, "400.002.02", "Bad Request - Invalid Amount or PhoneNumber")
        self.pushes += 1
        checkout = f"ws_CO_{datetime.now().strftime('%d%m%Y%H%M%S')}{secrets.token_hex(6)}"
        merchant = f"{secrets.randbelow(99999):05d}-{secrets.randbelow(10**8):08d}-1"
        self.requests[checkout] = {"push": body, "merchant": merchant, "result": None}
        if not phone.endswith(SILENT):
            task = asyncio.get_running_loop().create_task(self._customer_answers(checkout))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response({"MerchantRequestID": merchant, "CheckoutRequestID": checkout, "ResponseCode": "0",
                                  "ResponseDescription": "Success. Request accepted for processing",
                                  "CustomerMessage": "Success. Request accepted for processing"})

    async def _customer_answers(self, checkout: str) -> None:
        await asyncio.sleep(self.pin_delay_s)
        entry = self.requests[checkout]
        push = entry["push"]
        code, desc = OUTCOMES.get(str(push["PhoneNumber"])[-4:], (0, "The service request is processed successfully."))
        entry["result"] = (code, desc)
        callback: dict[str, Any] = {"MerchantRequestID": entry["merchant"], "CheckoutRequestID": checkout,
                                    "ResultCode": code, "ResultDesc": desc}
        if code == 0:
            receipt = secrets.token_hex(5).upper()
            callback["CallbackMetadata"] = {"Item": [
                {"Name": "Amount", "Value": float(push["Amount"])}, {"Name": "MpesaReceiptNumber", "Value": receipt},
                {"Name": "TransactionDate", "Value": int(datetime.now().strftime("%Y%m%d%H%M%S"))},
                {"Name": "PhoneNumber", "Value": int(push["PhoneNumber"])}]}
            self.record("charge", int(push["Amount"]) * 100, "KES", None, checkout=checkout, receipt=receipt,
                        phone=push["PhoneNumber"])
        self.emit(checkout, {"Body": {"stkCallback": callback}})

    async def deliver_event(self, event: dict[str, Any], *, age_s: int = 0) -> int | None:
        checkout = event["Body"]["stkCallback"]["CheckoutRequestID"]
        url = self.requests[checkout]["push"]["CallBackURL"]
        return await self.post(url, json.dumps(event).encode(), {"Content-Type": "application/json"})

    async def stk_query(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "404.001.03", "Invalid Access Token")
        body = await request.json()
        if not self._check_password(body):
            return _error(400, "400.002.02", "Bad Request - Invalid Password")
        entry = self.requests.get(str(body.get("CheckoutRequestID")))
        if entry is None:
            return _error(400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")
        if entry["result"] is None:
            return _error(500, "500.001.1001", "The transaction is being processed")
        code, desc = entry["result"]
        return web.json_response({"ResponseCode": "0", "ResponseDescription": "The service request has been accepted "
                                  "successsfully", "MerchantRequestID": entry["merchant"],
                                  "CheckoutRequestID": body["CheckoutRequestID"], "ResultCode": str(code),
                                  "ResultDesc": desc})
