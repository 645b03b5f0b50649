"""JSON's own types, exactly: what the OpenAPI document promises is what validation accepts."""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, StrictInt


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0, never true/false or "3"."""
    if isinstance(value, bool):
        raise ValueError("expected an integer, not true/false")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_json_integer)]
