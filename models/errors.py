"""The error envelope (ARCHITECTURE.md, API conventions): `{"message", "error": {"code", "message", "details"?}}`."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[Any] | None = None


class ErrorBody(BaseModel):
    message: str
    error: ErrorDetail


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    return ErrorBody(message=message, error=ErrorDetail(code=code, message=message, details=details)).model_dump(
        exclude_none=True)


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
