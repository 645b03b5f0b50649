"""/orders: users create and read their orders; admins manage all. Every change goes through OrderLock."""
from __future__ import annotations

import hashlib
from typing import Any

from bson import ObjectId
from quart import Blueprint, g, request
from quart_schema import validate_querystring, validate_request, validate_response

from durable import env
from models.errors import ApiError
from models.ids import is_object_id
from models.orders import ACTIVE, OrderIn, OrderList, OrderOut, OrderQuery, StatusIn
from models.pagination import Pagination

from durable.mongo import pooled_database as database
from ..stores.orders import OrderStore, order_out
from ..web import auth

bp = Blueprint("orders", __name__, url_prefix="/orders")


def lock(order_id: str) -> Any:
    return env.ORDER_LOCK.get(env.ORDER_LOCK.id_from_name(order_id))


def _new_order_id(user_id: str) -> str:
    """A fresh id, or — with an Idempotency-Key — the same id for the same user and key."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return str(ObjectId())
    if not 1 <= len(key) <= 255:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
    return hashlib.sha256(f"{user_id}\x00{key}".encode()).hexdigest()[:24]


async def _visible(order_id: str) -> dict[str, Any]:
    """The order if the caller may see it; 404 otherwise (no leaking of other users' ids)."""
    if not is_object_id(order_id):
        raise ApiError(400, "invalid_id", f"{order_id!r} is not a valid order id")
    doc = await OrderStore(await database(env)).get(order_id)
    if doc is None or (g.user.role != "admin" and doc["userId"] != g.user.userId):
        raise ApiError(404, "not_found", "Order not found")
    return doc


@bp.post("")
@auth()
@validate_request(OrderIn)
async def create_order(data: OrderIn) -> Any:
    order_id = _new_order_id(g.user.userId)
    spec = {"orderId": order_id, "userId": g.user.userId, "items": data.lines(), "currency": data.currency,
            "shippingAddress": data.shippingAddress.model_dump() if data.shippingAddress else None}
    order = await lock(order_id).create(spec)
    return {"message": "Order saved", "createdOrder": order,
            "request": {"type": "GET", "url": f"/orders/{order_id}"}}, 201


@bp.get("")
@auth()
@validate_querystring(OrderQuery)
@validate_response(OrderList)
async def list_orders(query_args: OrderQuery) -> Any:
    match: dict[str, Any] = {} if g.user.role == "admin" else {"userId": g.user.userId}
    if query_args.status:
        match["status"] = query_args.status
    if query_args.paymentStatus:
        match["paymentStatus"] = query_args.paymentStatus
    orders, total = await OrderStore(await database(env)).list(match, query_args.page, query_args.limit)
    return {"count": len(orders), "total": total, "orders": orders,
            "pagination": Pagination.of(query_args.page, query_args.limit, total).model_dump()}


@bp.get("/<order_id>")
@auth()
@validate_response(OrderOut)
async def get_order(order_id: str) -> Any:
    return order_out(await _visible(order_id))


@bp.patch("/<order_id>/status")
@auth("admin")
@validate_request(StatusIn)
@validate_response(OrderOut)
async def set_status(order_id: str, data: StatusIn) -> Any:
    await _visible(order_id)
    return await lock(order_id).set_status(data.status)


@bp.delete("/<order_id>")
@auth("admin")
async def delete_order(order_id: str) -> Any:
    doc = await _visible(order_id)
    stub = lock(order_id)
    if doc["status"] in ACTIVE:
        await stub.cancel("deleted by admin")
    await OrderStore(await database(env)).delete(order_id)
    await stub.forget()
    return {"message": "Order deleted"}
