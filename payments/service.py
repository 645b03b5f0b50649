"""The payments service layer: idempotent execution, initiate, settle, verify, refund, events.

Web-framework free: handlers pass parsed input and get back `Reply` values. Orders move only
through base's OrderLock (a Durable Object binding with script_name), never by writing base's
collections.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from durable.mongo_pool import pooled_database
from durable.public_url import public_base_url
from models.auth import Claims
from models.errors import error_body
from models.errors_domain import Conflict, NotFound, Unprocessable
from models.money import to_minor
from models.payments import InitiateIn, RefundIn
from web.errors import ApiError

from . import metrics, settlement
from .providers import registry
from .providers.base import (
    Charge,
    ChargeResult,
    ProviderEvent,
    ProviderUnavailable,
    RefundNotSupported,
)
from .stores.payments import PaymentStore, payment_out

log = logging.getLogger("rest_shop.payments")

RECORDED_ERRORS = {402, 404, 409}  # final answers; validation errors and 5xx are not recorded
FINAL = frozenset({"succeeded", "refunded", "partially_refunded"})


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data, separators=(",", ":")).encode(), dict(headers or {}))


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method}\n{path}\n{canonical}".encode()).hexdigest()


def derived_id(*parts: str) -> str:
    """A 24-hex id that is the same for the same (user, key): our provider reference."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


async def idempotent(env: Any, user: Claims, key: str, print_: str,
                     operation: Callable[[bool], Awaitable[Reply]]) -> Reply:
    """Run `operation` once per (user, key); replay its recorded final reply afterwards."""
    ns = env.PAYMENT_IDEMPOTENCY
    record = ns.get(ns.id_from_name(f"{user.userId}:{key}"))
    begun = await record.begin(print_)
    if begun["outcome"] == "replay":
        saved = begun["response"]
        return Reply(saved["status"], saved["body"], {**saved["headers"], "Idempotent-Replayed": "true"})
    if begun["outcome"] == "mismatch":
        raise ApiError(422, "idempotency_key_mismatch",
                       "This Idempotency-Key was used with a different request")
    if begun["outcome"] == "in_progress":
        raise ApiError(409, "idempotency_in_progress", "A request with this Idempotency-Key is still in progress",
                       headers={"Retry-After": "1"})
    try:
        reply = await operation(begun["recovered"])
    except ApiError as exc:
        if exc.status not in RECORDED_ERRORS:
            await record.release()
            raise
        reply = Reply.json(exc.status, error_body(exc.code, exc.message, exc.details), exc.headers)
    except BaseException:
        await record.release()
        raise
    await record.finish({"status": reply.status, "body": reply.body, "headers": reply.headers})
    return reply


async def _pause(env: Any, point: str) -> None:
    """Test hook (var PAYMENTS_TEST_PAUSE): stop here until the process is killed."""
    if str(env.get("PAYMENTS_TEST_PAUSE", "")) == point:
        print(f"PAYMENTS_TEST_PAUSE reached: {point}", flush=True)
        await asyncio.Event().wait()


def order_lock(env: Any, order_id: str) -> Any:
    return env.ORDER_LOCK.get_by_name(order_id)


async def payments(env: Any) -> PaymentStore:
    return PaymentStore(await pooled_database(env))


async def settle(env: Any, payment: dict[str, Any], result: ChargeResult) -> dict[str, Any]:
    """Apply a provider outcome to our record and the order; safe to repeat. The provider's
    reference, if the record lacks it, is written in the same command as the outcome."""
    store = await payments(env)
    payment_id = str(payment["_id"])
    metrics.PAYMENTS.labels(str(payment.get("provider")), result.status).inc()
    reference = ({"transactionId": result.transaction_id}
                 if result.transaction_id and not payment.get("transactionId") else {})
    if result.status == "succeeded":
        if settlement.settles(payment, result.amount_minor, result.currency) is not None:
            log.error("payment %s: provider reports %s %s, the order needs %s %s — marked failed", payment_id,
                      result.amount_minor, result.currency, payment["amount_minor"], payment["currency"])
            await order_lock(env, payment["orderId"]).mark_payment_failed(payment_id, "amount mismatch")
            return await store.apply(payment, status="failed", failureReason="amount or currency mismatch",
                                     **reference)
        try:
            await order_lock(env, payment["orderId"]).mark_paid(payment_id, payment["amount_minor"], payment["currency"])
        except (Conflict, Unprocessable) as exc:
            if reference:
                payment = await store.apply(payment, **reference)
            return await _refund_unwanted(store, payment, f"order not payable: {exc}")
        return await store.apply(payment, status="succeeded", failureReason=None, **reference)
    if result.status == "failed":
        await order_lock(env, payment["orderId"]).mark_payment_failed(payment_id, result.failure_reason or "")
        return await store.apply(payment, status="failed", failureReason=result.failure_reason, **reference)
    return await store.apply(payment, status=result.status, **reference)


async def _refund_unwanted(store: PaymentStore, payment: dict[str, Any], reason: str) -> dict[str, Any]:
    """Money arrived for an order that is already paid (another intent the customer also
    confirmed) or cancelled: give it back at once. The provider key makes a repeat a no-op."""
    payment_id = str(payment["_id"])
    provider = registry.for_method(payment["provider"])
    # the reason first: the provider's refund webhook may mark the record refunded before we do
    await store.update(payment_id, failureReason=reason)
    try:
        if provider is None:
            raise ProviderUnavailable(f"{payment['provider']} is not configured")
        result = await provider.refund(payment["transactionId"], payment["amount_minor"], f"auto-refund-{payment_id}")
        if result.status == "failed":
            raise ProviderUnavailable("the provider refused it")
    except (ProviderUnavailable, RefundNotSupported) as exc:
        log.error("payment %s: %s, and the automatic refund failed (%s): refund it by hand", payment_id, reason, exc)
        return await store.update(payment_id, status="succeeded", failureReason=f"{reason}; needs a refund")
    log.warning("payment %s: %s; refunded automatically (%s)", payment_id, reason, result.refund_id)
    metrics.PAYMENTS.labels(str(payment.get("provider")), "refunded_unwanted").inc()
    metrics.REFUNDS.labels(str(payment.get("provider"))).inc()
    return await store.add_refund(payment_id, {"id": result.refund_id, "amount_minor": result.amount_minor,
                                               "reason": "automatic: " + reason}, "refunded", failureReason=reason)


def _check_payable(order: dict[str, Any], provider: Any) -> None:
    problem = settlement.payable_problem(provider, order["total_minor"], order["currency"])
    if problem is not None:
        raise ApiError(422, "unprocessable_entity", problem)


async def initiate(env: Any, user: Claims, key: str, body: InitiateIn) -> Reply:
    data = body.method_data().model_dump(mode="json", exclude_none=True)
    public_base = public_base_url(env)

    async def run(recovered: bool) -> Reply:
        provider = registry.for_method(body.paymentMethod)
        if provider is None:
            raise ApiError(501, "provider_not_available", f"{body.paymentMethod} payments are not available here yet")
        payment_id = derived_id(user.userId, key)
        try:
            order = await order_lock(env, body.orderId).begin_payment(payment_id, user.userId, user.role == "admin")
        except NotFound:
            raise ApiError(404, "not_found", "Order not found") from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        try:
            _check_payable(order, provider)
        except ApiError:
            await order_lock(env, body.orderId).release_payment(payment_id)
            raise
        store = await payments(env)
        # `providerCalled`: from here on the provider may have been asked (the record is written
        # before the call, in the same command that creates it)
        payment, created = await store.start(payment_id, {
            "orderId": body.orderId, "userId": order["userId"], "paymentMethod": body.paymentMethod,
            "provider": provider.name, "amount_minor": order["total_minor"], "currency": order["currency"],
            "idempotencyKey": key, "providerCalled": True,
            **({"payerPhone": data["phoneNumber"]} if provider.name == "mpesa" else {})})
        try:
            if hasattr(provider, "ensure_webhook_endpoint"):
                await provider.ensure_webhook_endpoint(f"{public_base}/payments/webhooks/{provider.name}")
            if not created and provider.name == "mpesa":
                # no provider idempotency: never a second STK push for one record
                if not payment.get("transactionId"):
                    raise ApiError(409, "payment_in_doubt", "An M-Pesa request may already be on the customer's "
                                   "phone; check it with GET /payments/verify/" + payment_id)
                result = await provider.verify(payment["transactionId"])
            else:
                result = await provider.create(Charge(payment_id, body.orderId, payment["amount_minor"],
                                                      payment["currency"], data, public_base))
        except ProviderUnavailable as exc:
            raise ApiError(503, "provider_unavailable", f"{exc}; retry with the same Idempotency-Key",
                           headers={"Retry-After": "2"}) from None
        await _pause(env, "after-provider")
        payment = await settle(env, payment, result)
        if payment["status"] == "failed":
            raise ApiError(402, "payment_declined", payment.get("failureReason") or "The payment was declined",
                           details=[{"paymentId": payment_id}])
        details = {k: v for k, v in {"clientSecret": result.client_secret, "approvalUrl": result.approval_url,
                                     "customerMessage": result.customer_message}.items() if v}
        return Reply.json(201, {"message": "Payment initiated successfully", "payment": payment_out(payment),
                                "paymentDetails": details})

    return await idempotent(env, user, key, fingerprint("POST", "/payments/initiate", body.model_dump(mode="json")),
                            run)


async def visible_payment(env: Any, user: Claims, payment_id: str) -> dict[str, Any]:
    doc = await (await payments(env)).get(payment_id)
    if doc is None or (doc["userId"] != user.userId and user.role != "admin"):
        raise ApiError(404, "not_found", "Payment not found")
    return doc


async def verify(env: Any, user: Claims, payment_id: str) -> dict[str, Any]:
    """Ask the provider, then apply what it says (the same path as a webhook)."""
    payment = await visible_payment(env, user, payment_id)
    provider = registry.for_method(payment["provider"])
    if provider is None or not payment.get("transactionId"):
        return payment_out(payment)
    try:
        result = await provider.verify(payment["transactionId"])
    except ProviderUnavailable as exc:
        raise ApiError(503, "provider_unavailable", str(exc), headers={"Retry-After": "2"}) from None
    if payment["status"] in FINAL and result.status == "succeeded":
        return payment_out(payment)
    return payment_out(await settle(env, payment, result))


async def refund(env: Any, user: Claims, key: str, payment_id: str, body: RefundIn) -> Reply:
    async def run(recovered: bool) -> Reply:
        store = await payments(env)
        payment = await store.get(payment_id)
        if payment is None:
            raise ApiError(404, "not_found", "Payment not found")
        if payment["status"] not in ("succeeded", "partially_refunded"):
            raise ApiError(409, "conflict", f"a {payment['status']} payment cannot be refunded")
        left = settlement.refundable_minor(payment)
        amount = left if body.amount is None else to_minor(body.amount)
        if not 0 < amount <= left:
            raise ApiError(409, "conflict", f"can refund at most {left / 100:.2f} {payment['currency']}")
        provider = registry.for_method(payment["provider"])
        if provider is None:
            raise ApiError(503, "provider_unavailable", f"{payment['provider']} is not configured")
        try:
            result = await provider.refund(payment["transactionId"], amount, f"refund-{derived_id(payment_id, key)}")
        except RefundNotSupported as exc:
            raise ApiError(501, "refund_not_supported", str(exc)) from None
        except ProviderUnavailable as exc:
            raise ApiError(503, "provider_unavailable", f"{exc}; retry with the same Idempotency-Key",
                           headers={"Retry-After": "2"}) from None
        if result.status == "failed":
            raise ApiError(409, "conflict", "the provider refused the refund")
        metrics.REFUNDS.labels(str(payment.get("provider"))).inc()
        total, status = settlement.after_refund(payment, result.amount_minor)
        doc = await store.add_refund(payment_id, {"id": result.refund_id, "amount_minor": result.amount_minor,
                                                  "reason": body.reason}, status)
        await order_lock(env, payment["orderId"]).mark_refunded(payment_id, doc.get("refunded_minor", total))
        return Reply.json(200, {"message": "Refund processed", "payment": payment_out(doc)})

    return await idempotent(env, user, key, fingerprint("POST", f"/payments/{payment_id}/refund",
                                                        body.model_dump(mode="json")), run)


def mpesa_callback_problem(payment: dict[str, Any], event: ProviderEvent) -> str | None:
    """Why an STK callback cannot be believed for this payment, or None. Daraja signs nothing,
    so a callback counts only when it says exactly what our push asked for."""
    if payment.get("provider") != "mpesa":
        return "the payment is not an M-Pesa payment"
    if payment.get("transactionId") and event.transaction_id != payment["transactionId"]:
        return "CheckoutRequestID is not the one of this payment"
    if event.kind != "succeeded":
        return None
    missing = [name for name, value in (("Amount", event.amount_minor), ("MpesaReceiptNumber", event.extra.get("receipt")),
                                        ("PhoneNumber", event.extra.get("phone"))) if not value]
    if missing:
        return f"a success without {', '.join(missing)}"
    mismatch = settlement.settles(payment, event.amount_minor, event.currency or "")  # (Daraja must say both)
    if mismatch is not None:
        return f"amount {mismatch}"
    if payment.get("payerPhone") and event.extra["phone"] != payment["payerPhone"]:
        return "PhoneNumber is not the one the push went to"
    return None


async def apply_mpesa_callback(env: Any, payment_id: str, event: ProviderEvent) -> str:
    """A callback whose URL credential names `payment_id`: applied if it matches that payment;
    otherwise refused (logged, record untouched) and the STK query API asked instead."""
    store = await payments(env)
    payment = await store.get(payment_id)
    if payment is None:
        log.warning("M-Pesa callback for unknown payment %s", payment_id)
        return "unknown"
    problem = mpesa_callback_problem(payment, event)
    if problem is None:
        return await apply_event(env, "mpesa", dataclasses.replace(event, payment_id=payment_id), payment)
    log.warning("refused M-Pesa callback for payment %s: %s", payment_id, problem)
    provider = registry.providers.get("mpesa")
    if provider is not None and payment.get("transactionId") and payment["status"] not in FINAL:
        try:
            result = await provider.verify(payment["transactionId"])  # our own reference, not the callback's
        except ProviderUnavailable:
            return "refused"
        if result.status != "pending":
            await settle(env, payment, result)
    return "refused"


async def apply_event(env: Any, provider_name: str, event: ProviderEvent,
                      payment: dict[str, Any] | None = None) -> str:
    """A verified provider event, applied at most once (dedup by event id); returns what happened.
    `payment`: the record, when the caller already read it."""
    ns = env.PROVIDER_EVENTS
    seen = ns.get(ns.id_from_name(provider_name))
    claim = await seen.claim(event.event_id)
    if claim != "new":
        return claim
    try:
        await _apply(env, provider_name, event, payment)
    except Exception:
        await seen.release(event.event_id)
        raise
    await seen.done(event.event_id)
    return "applied"


async def _apply(env: Any, provider_name: str, event: ProviderEvent, known: dict[str, Any] | None) -> None:
    if event.extra.get("capture"):  # PayPal: the payer approved; capture now (idempotent), then settle
        store = await payments(env)
        payment = await store.by_transaction(event.extra["capture"])
        provider = registry.providers.get(provider_name)
        if payment is not None and provider is not None and payment["status"] not in FINAL:
            await settle(env, payment, await provider.verify(event.extra["capture"]))
    elif event.kind != "ignored":
        store = await payments(env)
        payment = known or (await store.get(event.payment_id) if event.payment_id else None)
        if payment is None and event.transaction_id:
            payment = await store.by_transaction(event.transaction_id)
        if payment is None:
            log.warning("%s event %s for an unknown payment", provider_name, event.event_id)
        elif event.kind == "refunded":
            status = "refunded" if (event.amount_minor or 0) >= payment["amount_minor"] else "partially_refunded"
            if (event.amount_minor or 0) > payment.get("refunded_minor", 0):
                await store.refund_total(str(payment["_id"]), event.amount_minor or 0, status)
                await order_lock(env, payment["orderId"]).mark_refunded(str(payment["_id"]), event.amount_minor)
        elif payment["status"] not in FINAL:
            if event.transaction_id and not payment.get("transactionId"):
                # the push reply was lost: keep the reference before the order moves, so a client
                # retrying meanwhile finds it (and asks the provider) instead of being told "in doubt"
                payment = await store.apply(payment, transactionId=event.transaction_id)
            await settle(env, payment, ChargeResult(transaction_id=event.transaction_id, status=event.kind,
                                                    amount_minor=event.amount_minor, currency=event.currency,
                                                    failure_reason=event.extra.get("reason")))
