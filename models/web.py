"""Quart glue every service shares: who is calling (JWT), and JSON errors, never a stack trace or HTML."""
from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from pydantic import ValidationError
from pymongo.errors import ConnectionFailure, PyMongoError
from quart import Blueprint, Quart, g, has_websocket_context, jsonify, request, websocket
from quart_schema import QuartSchema, RequestSchemaValidationError, document_response
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from durable import ObjectUnavailable, env
from durable.errors import RpcError

from .auth import Claims, TokenError, bearer_token, verify_token
from .errors import ApiError, ErrorBody, error_body, object_unavailable
from .errors_domain import Conflict, DatabaseUnavailable, InsufficientStock, NotFound, Unprocessable
from .health import Health
from .ids import PATH_OBJECT_ID
from .openapi import IDEMPOTENCY_KEY_PATTERN, TruthfulOpenAPI

log = logging.getLogger("rest_shop.web")


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


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _claims() -> Claims:
    incoming = websocket if has_websocket_context() else request
    token = bearer_token(incoming.headers.get("Authorization"))
    if token is None and incoming is websocket:  # browsers cannot set headers on a WebSocket
        token = incoming.args.get("access_token") or None
    if token is None:
        raise ApiError(401, "unauthorized", "Auth failed: missing bearer token")
    try:
        return verify_token(env.JWT_KEY, token)
    except TokenError as exc:
        raise ApiError(401, "unauthorized", f"Auth failed: {exc}") from None


def user_sessions(user_id: str) -> Any:
    """The user's UserSessions object (base hosts the class; other services bind it by script_name)."""
    return env.USER_SESSIONS.get_by_name(user_id)


async def _signed_in() -> Claims:
    """A valid token whose session still speaks for its user: not logged out, the account not
    deleted, its role and password unchanged since the token was issued."""
    claims = _claims()
    problem = await session_problem(claims)
    if problem is not None:
        raise ApiError(401, "unauthorized", f"Auth failed: {problem}")
    return claims


def liveness() -> Blueprint:
    """`GET /health/live`, every worker's liveness probe: the process answers. It touches nothing
    outside the process (`/health` is readiness: a database that is away makes that one 503,
    never this one, so a process manager does not restart a worker for its database)."""
    bp = Blueprint("liveness", __name__)

    @bp.get("/health/live")
    @document_response(Health, 200)
    async def live() -> Any:
        return Health.now(env.SERVICE_NAME, env.ENVIRONMENT).model_dump()
    return bp


async def session_problem(claims: Claims) -> str | None:
    """None while these claims still speak for their user; else why not. (A long-lived socket asks
    again as it goes: its token was checked once, at the upgrade.)"""
    return await user_sessions(claims.userId).check(claims.userId, claims.sid, claims.gen, claims.role)


async def optional_user() -> Claims | None:
    """The caller's claims if a valid token is sent, else None (a bad token is still a 401)."""
    if not request.headers.get("Authorization"):
        return None
    return await _signed_in()


def documents_errors(*statuses: int) -> Callable[[F], F]:
    """List error answers (the envelope of ARCHITECTURE.md, API conventions) of a route in its
    /openapi.json operation."""
    def decorate(handler: F) -> F:
        for status in statuses:
            handler = document_response(ErrorBody, status)(handler)
        return handler
    return decorate


def auth(role: str | None = None) -> Callable[[F], F]:
    """Require a valid, live token (and `role`, if given); the claims land in `g.user`. The route's
    document lists what that can answer: 401, 403 for a role, 503 when the session cannot be read."""
    def decorate(handler: F) -> F:
        @wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.user = await _signed_in()
            if role is not None and g.user.role != role:
                raise ApiError(403, "forbidden", f"This route needs the {role} role")
            return await handler(*args, **kwargs)
        return documents_errors(401, 503, *((403,) if role else ()))(wrapper)  # type: ignore[return-value]
    return decorate


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


def client_ip() -> str:
    """The address the gateway resolved and signed (see `service_auth`), else the socket peer:
    a service never believes a client-sent forwarding header."""
    return getattr(g, "client_ip", None) or request.remote_addr or ""


class ObjectIdConverter(BaseConverter):
    """`<oid:user_id>`: only a 24-hex id matches, so `/user/login` is never `DELETE /user/<id>`
    (and an OPTIONS answer's Allow lists only what the path really takes)."""

    regex = PATH_OBJECT_ID


def documents_file(media_type: str, *, ranges: bool = False, revalidated: bool = False) -> Callable[[F], F]:
    """The route answers 200 with a file of `media_type` (and 404 when there is none); with
    `ranges` a Range request's 206, with `revalidated` a matching If-None-Match's 304."""
    def decorate(handler: F) -> F:
        handler._documents_file = media_type  # type: ignore[attr-defined]  # read by models.openapi
        handler._documents_file_answers = (ranges, revalidated)  # type: ignore[attr-defined]
        return documents_errors(404)(handler)
    return decorate


IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)  # what the document says


def idempotency_key(*, required: bool) -> str | None:
    """The request's Idempotency-Key, checked as documented (400 when missing and required)."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        if required:
            raise ApiError(400, "idempotency_key_required", "Send an Idempotency-Key header (1 to 255 characters)")
        return None
    if not IDEMPOTENCY_KEY.match(raw):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is 1 to 255 printable ASCII characters")
    return raw


def documents_redirect(target: str) -> Callable[[F], F]:
    """The route answers 302 with a `Location` (to `target`, in words) instead of a body."""
    def decorate(handler: F) -> F:
        handler._documents_redirect = target  # type: ignore[attr-defined]  # read by models.openapi
        return handler
    return decorate


def documents_path_choices(**choices: list[str]) -> Callable[[F], F]:
    """These path parameters take only the values listed (the document says which exist)."""
    def decorate(handler: F) -> F:
        handler._path_choices = choices  # type: ignore[attr-defined]  # read by models.openapi
        return handler
    return decorate


def documents_path_patterns(**patterns: str) -> Callable[[F], F]:
    """These path parameters match these regular expressions (the document says which are well-formed)."""
    def decorate(handler: F) -> F:
        handler._path_patterns = patterns  # type: ignore[attr-defined]  # read by models.openapi
        return handler
    return decorate


def documents_idempotency_key(*, required: bool) -> Callable[[F], F]:
    """The operation takes an Idempotency-Key header (listed in its /openapi.json parameters)."""
    def decorate(handler: F) -> F:
        handler._idempotency_key = required  # type: ignore[attr-defined]  # read by models.openapi
        return handler
    return decorate


def install_schema(app: Quart, title: str) -> None:
    """QuartSchema (request validation, /openapi.json), minus its per-response cost for plain
    JSON: it builds a pydantic TypeAdapter for every dict a handler returns (~70 µs a response);
    our handlers return JSON-ready dicts, so those go straight to Quart."""
    app.url_map.converters["oid"] = ObjectIdConverter
    plain = app.make_response
    QuartSchema(app, info={"title": title, "version": "1"}, redoc_ui_path=None, scalar_ui_path=None,
                pydantic_dump_options={"by_alias": True}, openapi_provider_class=TruthfulOpenAPI)
    converting = app.make_response

    async def make_response(result: Any) -> Any:
        value = result[0] if isinstance(result, tuple) else result
        return await (plain if isinstance(value, (dict, list)) else converting)(result)

    app.make_response = make_response  # type: ignore[method-assign]


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Any:
        return _reply(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(RequestSchemaValidationError)
    async def _invalid(exc: RequestSchemaValidationError) -> Any:
        error = exc.validation_error
        if isinstance(error, ValidationError):
            return _reply(400, "validation_error", "Invalid request", validation_details(error))
        return _reply(400, "validation_error", "Invalid request: expected a JSON object")

    @app.errorhandler(NotFound)
    async def _not_found(exc: NotFound) -> Any:
        return _reply(404, "not_found", str(exc))

    @app.errorhandler(Conflict)
    async def _conflict(exc: Conflict) -> Any:
        return _reply(409, "conflict", str(exc))

    @app.errorhandler(InsufficientStock)
    async def _stock(exc: InsufficientStock) -> Any:
        product_id, available, requested = exc.parts()
        return _reply(409, "insufficient_stock", f"Only {available} in stock, {requested} requested",
                      [{"productId": product_id, "available": available, "requested": requested}])

    @app.errorhandler(RpcError)
    @app.errorhandler(PyMongoError)
    async def _maybe_database(exc: Exception) -> Any:
        """A database error, or one an object let escape (crossed as RpcError): the database away
        or slow (no server, a cancelled operation, a command past the request's deadline) is a
        retryable 503; anything else is ours (500)."""
        if is_database_failure(exc):
            return await _database_down(exc)
        return await _unexpected(exc)

    @app.errorhandler(ConnectionFailure)
    @app.errorhandler(DatabaseUnavailable)
    async def _database_down(exc: Exception) -> Any:
        log.warning("database unavailable: %s", type(exc).__name__)
        return _reply(503, "database_unavailable", "The database is unavailable; retry shortly",
                      headers={"Retry-After": "2"})

    @app.errorhandler(ObjectUnavailable)
    async def _object_unavailable(exc: ObjectUnavailable) -> Any:
        log.warning("object unavailable: %s", exc)
        return await _api_error(object_unavailable())

    @app.errorhandler(RecursionError)
    @app.errorhandler(UnicodeDecodeError)
    async def _unreadable_body(exc: Exception) -> Any:
        """The JSON parser gave up on the body: nested thousands deep, or not UTF-8 at all."""
        if request.content_length:
            problem = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
            return _reply(400, "invalid_json", f"The request body is {problem}")
        log.exception("unhandled %s", type(exc).__name__)
        return _reply(500, "internal_error", "Internal Server Error")

    @app.errorhandler(Unprocessable)
    async def _unprocessable(exc: Unprocessable) -> Any:
        return _reply(422, "unprocessable_entity", str(exc))

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = "Route not found" if status == 404 else (exc.description or exc.name)
        response = jsonify(error_body(_CODES.get(status, "http_error"), message))
        response.status_code = status
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:  # RFC 9110: a 405 says which methods the resource does take
            response.headers["Allow"] = ", ".join(sorted(set(allowed)))
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled %s", type(exc).__name__)
        response = jsonify(error_body("internal_error", "Internal Server Error"))
        response.status_code = 500
        return response
