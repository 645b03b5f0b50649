"""Quart glue every service shares: JSON errors for every failure, never a stack trace or HTML."""
from __future__ import annotations

import logging
from typing import Any

from quart import Quart, jsonify
from werkzeug.exceptions import HTTPException

from .errors import ApiError, error_body

log = logging.getLogger("rest_shop.web")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
          422: "unprocessable_entity", 429: "rate_limited", 503: "service_unavailable"}


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Any:
        response = jsonify(error_body(exc.code, exc.message, exc.details))
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        message = "Route not found" if status == 404 else (exc.description or exc.name)
        response = jsonify(error_body(_CODES.get(status, "http_error"), message))
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled %s", type(exc).__name__)
        response = jsonify(error_body("internal_error", "Internal Server Error"))
        response.status_code = 500
        return response
