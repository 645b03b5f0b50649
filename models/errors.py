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
