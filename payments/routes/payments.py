"""/payments: initiate, read, verify, history, refund. Thin: parse, call the service, reply."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from quart import Blueprint, Response, g
from quart_schema import document_response, validate_querystring, validate_request

from durable import env
from models.ids import is_object_id
from models.pagination import Pagination
from models.payments import (
    HistoryQuery,
    InitiateIn,
    InitiateOut,
    PaymentList,
    PaymentReply,
    RefundIn,
    RefundOut,
)
from web.auth import auth
from web.docs import documents_errors, documents_idempotency_key
from web.errors import ApiError, validation_details
from web.requests import idempotency_key

from .. import service
from ..public_urls import is_allowed_return
from ..stores.payments import payment_out

bp = Blueprint("payments", __name__, url_prefix="/payments")


def _reply(reply: service.Reply) -> Response:
    return Response(reply.body, status=reply.status, headers=reply.headers, content_type="application/json")


def _payment_id(payment_id: str) -> str:
    if not is_object_id(payment_id):
        raise ApiError(400, "invalid_id", f"{payment_id!r} is not a valid payment id")
    return payment_id


@bp.post("/initiate")
@document_response(InitiateOut, 201)
@documents_errors(400, 402, 404, 409, 422, 501)
@documents_idempotency_key(required=True)
@auth()
@validate_request(InitiateIn)
async def initiate(data: InitiateIn) -> Any:
    key = idempotency_key(required=True)
    try:
        method_data = data.method_data()
    except ValidationError as exc:
        raise ApiError(400, "validation_error", "Invalid paymentData", validation_details(exc)) from None
    for name in ("returnUrl", "cancelUrl"):  # PayPal sends the shopper's browser there: no open redirect
        url = getattr(method_data, name, None)
        if url is not None and not is_allowed_return(env, str(url)):  # a valid URL, not one of ours: 422
            raise ApiError(422, "return_url_not_allowed", f"paymentData.{name} must be on this shop's origin or "
                                                          f"one listed in RETURN_URL_ORIGINS")
    return _reply(await service.initiate(env, g.user, key, data))


@bp.get("/history")
@auth()
@validate_querystring(HistoryQuery)
@document_response(PaymentList)
async def history(query_args: HistoryQuery) -> Any:
    if g.user.role == "admin":
        match = {"userId": query_args.userId} if query_args.userId else {}
    else:
        match = {"userId": g.user.userId}
    items, total = await (await service.payments(env)).list(match, query_args.page, query_args.limit)
    return {"count": len(items), "total": total, "payments": items,
            "pagination": Pagination.of(query_args.page, query_args.limit, total).model_dump()}


@bp.get("/verify/<oid:payment_id>")
@auth()
@document_response(PaymentReply)
async def verify(payment_id: str) -> Any:
    return {"payment": await service.verify(env, g.user, _payment_id(payment_id))}


@bp.get("/<oid:payment_id>")
@auth()
@document_response(PaymentReply)
async def get_payment(payment_id: str) -> Any:
    return {"payment": payment_out(await service.visible_payment(env, g.user, _payment_id(payment_id)))}


@bp.post("/<oid:payment_id>/refund")
@document_response(RefundOut)
@documents_errors(409, 422)  # 409 not refundable now; 422 a reused key with another body, or too much
@documents_idempotency_key(required=True)
@auth("admin")
@validate_request(RefundIn)
async def refund(payment_id: str, data: RefundIn) -> Any:
    key = idempotency_key(required=True)
    return _reply(await service.refund(env, g.user, key, _payment_id(payment_id), data))
