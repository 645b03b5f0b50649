"""Ids in the API: 24-hex ObjectId strings."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

ObjectIdStr = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{24}$", description="24-hex ObjectId")]


def is_object_id(value: str) -> bool:
    return len(value) == 24 and all(c in "0123456789abcdefABCDEF" for c in value)
