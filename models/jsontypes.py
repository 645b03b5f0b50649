"""JSON's own types, exactly: what the OpenAPI document promises is what validation accepts."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0, never true/false or "3"."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not true/false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(*, ge: int, le: int) -> Any:
    """An integer field in [ge, le]; the bounds sit on the integer itself so the document shows them."""
    return Annotated[int, Field(strict=True, ge=ge, le=le), BeforeValidator(_json_integer)]
