"""Every failure a service answers is the error envelope with the right status: ours
(`ApiError`), the domain's (`models.errors_domain`), the framework's, and a database or object
that is away (503 with Retry-After, never a 500 for a peer's failure)."""
from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from pymongo.errors import ConnectionFailure, PyMongoError
from quart import Quart, jsonify, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from durable import ObjectUnavailable
from durable.errors import RpcError
from models.errors import error_body
from models.errors_domain import (
    Conflict,
    DatabaseUnavailable,
    InsufficientStock,
    NotFound,
    UnpaidLimit,
    Unprocessable,
)

log = logging.getLogger("rest_shop.web")


class ApiError(Exception):
    """Raise from a handler to answer with the error envelope and `status`."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers or {}


def object_unavailable() -> ApiError:
    """A Durable Object's node is unreachable or its shard is moving (a cluster fail-over):
    nothing was decided, and a retry in a moment reaches the new owner."""
    return ApiError(503, "object_unavailable", "A service component is moving or unreachable; retry shortly",
                    headers={"Retry-After": "1"})


def _subclass_names(cls: type) -> frozenset[str]:
    found = {cls.__name__}
    for sub in cls.__subclasses__():
        found |= _subclass_names(sub)
    return frozenset(found)


# pymongo's "the database went away" errors (a cancelled operation, a timeout, no server, the
# request's deadline reached): an object that lets one escape is seen by its caller as an
# RpcError carrying this name
DATABASE_FAILURES = _subclass_names(ConnectionFailure) | {"ExecutionTimeout", "WTimeoutError"}


def is_database_failure(exc: BaseException) -> bool:
    if isinstance(exc, PyMongoError):
        return isinstance(exc, ConnectionFailure) or exc.timeout
    return isinstance(exc, RpcError) and exc.remote_type in DATABASE_FAILURES


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
          422: "unprocessable_entity", 429: "rate_limited", 503: "service_unavailable"}


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as `[{"field", "message"}]` — no input values echoed back."""
    return [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]


def _reply(status: int, code: str, message: str, details: list[Any] | None = None,
           headers: dict[str, str] | None = None) -> Any:
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def install_error_handlers(app: Quart) -> None:
    """Our errors and the domain's as their statuses; the framework's in the envelope; a
    dependency away as a retryable 503; anything else a 500 with no stack trace."""
    for kind, handler in ((ApiError, _api_error), (RequestSchemaValidationError, _invalid),
                          (NotFound, _not_found), (Conflict, _conflict), (InsufficientStock, _stock), (UnpaidLimit, _unpaid),
                          (Unprocessable, _unprocessable), (RpcError, _maybe_database), (PyMongoError, _maybe_database),
                          (ConnectionFailure, _database_down), (DatabaseUnavailable, _database_down),
                          (ObjectUnavailable, _object_unavailable), (RecursionError, _unreadable_body),
                          (UnicodeDecodeError, _unreadable_body), (HTTPException, _http_error), (Exception, _unexpected)):
        app.register_error_handler(kind, handler)


async def _api_error(exc: ApiError) -> Any:
    return _reply(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _invalid(exc: RequestSchemaValidationError) -> Any:
    error = exc.validation_error
    if isinstance(error, ValidationError):
        return _reply(400, "validation_error", "Invalid request", validation_details(error))
    return _reply(400, "validation_error", "Invalid request: expected a JSON object")


async def _not_found(exc: NotFound) -> Any:
    return _reply(404, "not_found", str(exc))


async def _conflict(exc: Conflict) -> Any:
    return _reply(409, "conflict", str(exc))


async def _stock(exc: InsufficientStock) -> Any:
    product_id, available, requested = exc.parts()
    return _reply(409, "insufficient_stock", f"Only {available} in stock, {requested} requested",
                  [{"productId": product_id, "available": available, "requested": requested}])


async def _unpaid(exc: UnpaidLimit) -> Any:
    orders, units, max_orders, max_units, requested = exc.parts()
    return _reply(409, "unpaid_limit", f"You hold {orders} unpaid order(s) with {units} unit(s); at most "
                  f"{max_orders} orders and {max_units} units may wait for payment. Pay or cancel one first",
                  [{"unpaidOrders": orders, "unpaidUnits": units, "maxUnpaidOrders": max_orders,
                    "maxUnpaidUnits": max_units, "requestedUnits": requested}])


async def _unprocessable(exc: Unprocessable) -> Any:
    return _reply(422, "unprocessable_entity", str(exc))


async def _maybe_database(exc: Exception) -> Any:
    """A database error, or one an object let escape (crossed as RpcError): the database away
    or slow (no server, a cancelled operation, a command past the request's deadline) is a
    retryable 503; anything else is ours (500)."""
    if is_database_failure(exc):
        return await _database_down(exc)
    return await _unexpected(exc)


async def _database_down(exc: Exception) -> Any:
    log.warning("database unavailable: %s", type(exc).__name__)
    return _reply(503, "database_unavailable", "The database is unavailable; retry shortly",
                  headers={"Retry-After": "2"})


async def _object_unavailable(exc: ObjectUnavailable) -> Any:
    log.warning("object unavailable: %s", exc)
    return await _api_error(object_unavailable())


async def _unreadable_body(exc: Exception) -> Any:
    """The JSON parser gave up on the body: nested thousands deep, or not UTF-8 at all."""
    if request.content_length:
        problem = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
        return _reply(400, "invalid_json", f"The request body is {problem}")
    log.exception("unhandled %s", type(exc).__name__)
    return _reply(500, "internal_error", "Internal Server Error")


async def _http_error(exc: HTTPException) -> Any:
    status = exc.code or 500
    message = "Route not found" if status == 404 else (exc.description or exc.name)
    response = _reply(status, _CODES.get(status, "http_error"), message)
    allowed = getattr(exc, "valid_methods", None)
    if status == 405 and allowed:  # RFC 9110: a 405 says which methods the resource does take
        response.headers["Allow"] = ", ".join(sorted(set(allowed)))
    return response


async def _unexpected(exc: Exception) -> Any:
    log.exception("unhandled %s", type(exc).__name__)
    return _reply(500, "internal_error", "Internal Server Error")
