"""/orders: users create and read their orders; admins manage all. Every change goes through OrderLock."""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Any

from bson import ObjectId
from quart import Blueprint, g, websocket
from quart import Response as QuartResponse
from quart_schema import (
    document_response,
    hide,
    validate_querystring,
    validate_request,
    validate_response,
)

from durable import Request, env
from durable.mongo_pool import pooled_database as database
from models.errors_domain import Conflict, InsufficientStock, NotFound, Unprocessable
from models.ids import is_object_id
from models.orders import (
    ACTIVE,
    OrderCreated,
    OrderIn,
    OrderList,
    OrderOut,
    OrderQuery,
    StatusIn,
)
from models.pagination import Pagination
from models.users import MessageOut
from web.auth import auth, session_problem
from web.docs import documents_errors, documents_idempotency_key
from web.errors import ApiError
from web.requests import idempotency_key

from .. import metrics
from ..live_sockets import SocketLimits, join_websocket
from ..stores.orders import OrderStore, order_out

bp = Blueprint("orders", __name__, url_prefix="/orders")


def lock(order_id: str) -> Any:
    return env.ORDER_LOCK.get_by_name(order_id)


def _new_order_id(user_id: str) -> str:
    """A fresh id, or — with an Idempotency-Key — the same id for the same user and key."""
    key = idempotency_key(required=False)
    if key is None:
        return str(ObjectId())
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
@documents_idempotency_key(required=False)
@documents_errors(400, 404, 409, 422)  # 409: insufficient_stock, unpaid_limit, currency, a reused key
@auth()
@validate_request(OrderIn)
@document_response(OrderCreated, 201)
async def create_order(data: OrderIn) -> Any:
    order_id = _new_order_id(g.user.userId)
    spec = {"orderId": order_id, "userId": g.user.userId, "items": data.lines(), "currency": data.currency,
            "shippingAddress": data.shippingAddress.model_dump() if data.shippingAddress else None}
    try:
        order = await lock(order_id).create(spec, capped=g.user.role != "admin")
    except (Conflict, InsufficientStock, NotFound, Unprocessable) as exc:  # refused: the object kept nothing held
        metrics.order_refused(exc)
        raise
    metrics.ORDERS_CREATED.inc()
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


@bp.get("/<order_id>/live")
@hide  # not an HTTP operation: the WebSocket is listed under the document's `x-websockets`
async def follow_order_over_http(order_id: str) -> Any:
    """A plain GET of the WebSocket's URL: 426 says how to connect."""
    raise ApiError(426, "upgrade_required", "GET /orders/{id}/live is a WebSocket: connect with Upgrade: websocket",
                   headers={"Upgrade": "websocket"})


@bp.websocket("/<order_id>/live")
@auth()
async def follow_order(order_id: str) -> Any:
    """Follow an order live (WebSocket).

    It gets the order as JSON now and each time it changes (`{"type": "order", "version",
    "order"}`), and is closed (1000) once the order is final; `ping` is answered `pong`. The token
    comes in the Authorization header or, from a browser, as `?access_token=`. Only the owner or an
    admin may follow an order. Refusals are HTTP answers in the error envelope: 400 (not an order
    id), 401, 404, 429 (LIVE_SOCKETS_PER_ORDER sockets of this session on this order, or
    LIVE_SOCKETS_PER_USER of this user's on this server); a plain GET without the upgrade is 426.
    A client sends at most LIVE_MAX_FRAMES_PER_MIN messages of LIVE_MAX_FRAME_BYTES, and a ping at
    least every LIVE_IDLE_TIMEOUT_S, or is closed; so is every socket of a session that ended
    (logout everywhere, a reset, a role change, deletion, expiry: 1008, within LIVE_SESSION_CHECK_S)."""
    if not is_object_id(order_id):
        raise ApiError(400, "invalid_id", f"{order_id!r} is not a valid order id")
    # per server process: what a user's sockets cost is this process's file descriptors
    open_sockets: Counter[str] = env.isolate_state("live_sockets_per_user", Counter)
    user_cap = int(env.get("LIVE_SOCKETS_PER_USER", 20))
    if open_sockets[g.user.userId] >= user_cap:
        raise ApiError(429, "too_many_sockets", f"You follow {user_cap} orders live already; close one first",
                       headers={"Retry-After": "60"})
    open_sockets[g.user.userId] += 1
    try:
        answer = await lock(order_id).fetch(Request("http://order-lock/live", headers={
            "upgrade": "websocket", "x-user-id": g.user.userId, "x-user-role": g.user.role,
            "x-session-id": g.user.sid}))
        if answer.web_socket is None:
            return QuartResponse(answer.body, status=answer.status, headers=list(answer.headers.items()))
        await websocket.accept()
        claims = g.user

        async def ended() -> str | None:
            return "the token expired" if time.time() >= claims.exp else await session_problem(claims)
        await join_websocket(answer.web_socket, SocketLimits.from_env(env), ended)
        return None
    finally:
        open_sockets[g.user.userId] -= 1
        if open_sockets[g.user.userId] <= 0:
            del open_sockets[g.user.userId]


@bp.patch("/<order_id>/status")
@documents_errors(409)  # not a transition the order's state machine allows
@auth("admin")
@validate_request(StatusIn)
@validate_response(OrderOut)
async def set_status(order_id: str, data: StatusIn) -> Any:
    await _visible(order_id)
    return await lock(order_id).set_status(data.status)


@bp.post("/<order_id>/cancel")
@documents_errors(400, 404, 409)
@auth()
@validate_response(OrderOut)
async def cancel_order(order_id: str) -> Any:
    """The owner gives up an unpaid order (its stock and its unpaid-order place come back)."""
    doc = await _visible(order_id)
    if doc["paymentStatus"] == "paid" and g.user.role != "admin":
        raise ApiError(409, "conflict", "A paid order is cancelled by the shop (ask for a refund)")
    return await lock(order_id).cancel("cancelled by the customer" if g.user.role != "admin" else "cancelled")


@bp.delete("/<order_id>")
@auth("admin")
@document_response(MessageOut)
async def delete_order(order_id: str) -> Any:
    doc = await _visible(order_id)
    stub = lock(order_id)
    if doc["status"] in ACTIVE:
        await stub.cancel("deleted by admin")
    await OrderStore(await database(env)).delete(order_id)
    await stub.forget()
    return {"message": "Order deleted"}
